"""What `pipeline status` shows: per stream, how far it got, how its last run ended, its rows,
and whether it is fresh: a configured, enabled stream whose last success is older than twice
its schedule's period (or that never succeeded) is stale. Monitoring reads `--json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.cron import period
from pipeline.sources import SOURCES
from pipeline.targets import StreamTarget


@dataclass(frozen=True)
class StreamStatus:
    key: str
    configured: bool
    enabled: bool
    schedule: str | None
    watermark: datetime | None
    last_run_started: datetime | None
    last_run_status: str | None
    last_success: datetime | None
    live_rows: int
    deleted_rows: int
    last_error: str | None
    age_seconds: float | None
    stale: bool

    @property
    def failed(self) -> bool:
        return self.last_run_status == "failed"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.astimezone(UTC).isoformat()
        out["failed"] = self.failed
        return out


_LAST_RUN = sa.text(
    "SELECT started_at, status, error FROM pipeline.sync_runs WHERE stream = :stream "
    "AND kind = 'sync' ORDER BY started_at DESC, id DESC LIMIT 1"
)
_LAST_SUCCESS = sa.text(
    "SELECT max(finished_at) FROM pipeline.sync_runs "
    "WHERE stream = :stream AND status = 'succeeded' AND kind = 'sync'"
)
_WATERMARK = sa.text("SELECT watermark FROM pipeline.stream_state WHERE stream = :stream")


def _targets(settings: Settings | None) -> dict[str, StreamTarget]:
    """Configured streams by their base name (`source.stream`)."""
    if settings is None:
        return {}
    return {
        f"{name}.{stream.name}": StreamTarget(SOURCES[name], stream, config)
        for name, config in settings.sources.items()
        for stream in SOURCES[name].streams
    }


async def stream_statuses(
    engine: AsyncEngine, settings: Settings | None = None, now: datetime | None = None
) -> list[StreamStatus]:
    now = now or datetime.now(UTC)
    configured = _targets(settings)
    out = []
    async with engine.connect() as conn:
        for spec in SOURCES.values():
            for stream in spec.streams:
                base = f"{spec.name}.{stream.name}"
                target = configured.get(base)
                key = target.key if target else base
                params = {"stream": key}
                last = (await conn.execute(_LAST_RUN, params)).first()
                last_success = (await conn.execute(_LAST_SUCCESS, params)).scalar()
                live, deleted = (
                    await conn.execute(
                        sa.text(
                            "SELECT count(*) FILTER (WHERE _deleted_at IS NULL), "
                            "count(*) FILTER (WHERE _deleted_at IS NOT NULL) "
                            f'FROM "{spec.schema}"."{stream.name}"'
                        )
                    )
                ).one()
                enabled = bool(target and target.settings.enabled)
                schedule = target.settings.schedule if target else None
                age = (now - last_success).total_seconds() if last_success else None
                stale = (
                    enabled
                    and schedule is not None
                    and (age is None or timedelta(seconds=age) > 2 * period(schedule, now))
                )
                out.append(
                    StreamStatus(
                        key=key,
                        configured=target is not None,
                        enabled=enabled,
                        schedule=schedule,
                        watermark=(await conn.execute(_WATERMARK, params)).scalar(),
                        last_run_started=last[0] if last else None,
                        last_run_status=last[1] if last else None,
                        last_success=last_success,
                        live_rows=live,
                        deleted_rows=deleted,
                        last_error=last[2] if last else None,
                        age_seconds=age,
                        stale=stale,
                    )
                )
    return out


def needs_attention(statuses: list[StreamStatus]) -> bool:
    """What makes `pipeline status` exit 1: a configured stream that is stale or failed."""
    return any(s.configured and (s.stale or s.failed) for s in statuses)
