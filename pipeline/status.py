"""What `pipeline status` shows: per stream, how far it got, how its last run ended, its rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sources import SOURCES


@dataclass(frozen=True)
class StreamStatus:
    key: str
    watermark: datetime | None
    last_run_started: datetime | None
    last_run_status: str | None
    last_success: datetime | None
    live_rows: int
    deleted_rows: int
    last_error: str | None


_LAST_RUN = sa.text(
    "SELECT started_at, status, error FROM pipeline.sync_runs WHERE stream = :stream "
    "ORDER BY started_at DESC, id DESC LIMIT 1"
)
_LAST_SUCCESS = sa.text(
    "SELECT max(finished_at) FROM pipeline.sync_runs WHERE stream = :stream AND status = 'succeeded'"
)
_WATERMARK = sa.text("SELECT watermark FROM pipeline.stream_state WHERE stream = :stream")


async def stream_statuses(engine: AsyncEngine) -> list[StreamStatus]:
    out = []
    async with engine.connect() as conn:
        for spec in SOURCES.values():
            for stream in spec.streams:
                key = f"{spec.name}.{stream.name}"
                params = {"stream": key}
                last = (await conn.execute(_LAST_RUN, params)).first()
                counts = (
                    await conn.execute(
                        sa.text(
                            "SELECT count(*) FILTER (WHERE _deleted_at IS NULL), "
                            "count(*) FILTER (WHERE _deleted_at IS NOT NULL) "
                            f'FROM "{spec.schema}"."{stream.name}"'
                        )
                    )
                ).one()
                out.append(
                    StreamStatus(
                        key=key,
                        watermark=(await conn.execute(_WATERMARK, params)).scalar(),
                        last_run_started=last[0] if last else None,
                        last_run_status=last[1] if last else None,
                        last_success=(await conn.execute(_LAST_SUCCESS, params)).scalar(),
                        live_rows=counts[0],
                        deleted_rows=counts[1],
                        last_error=last[2] if last else None,
                    )
                )
    return out
