"""Incremental state per stream (`pipeline.stream_state`).

The watermark is only ever written inside the transaction that stores the data it covers, and
never moves backwards: a backfill or a replay can re-read old data without forgetting how far
the stream had got.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from pipeline.locks import TRY_LOCK, UNLOCK, lock_name
from pipeline.statekeys import OF_STREAM, StateKey


@dataclass(frozen=True)
class StreamState:
    watermark: datetime | None = None
    checkpoint: dict[str, Any] | None = None
    updated_at: datetime | None = None


async def read_state(conn: asyncpg.Connection, stream_key: str) -> StreamState:
    row = await conn.fetchrow(
        "SELECT watermark, checkpoint, updated_at FROM pipeline.stream_state WHERE stream = $1",
        stream_key,
    )
    if row is None:
        return StreamState()
    return StreamState(row["watermark"], _as_dict(row["checkpoint"]), row["updated_at"])


def _as_dict(value: Any) -> dict[str, Any] | None:
    # The JSONB codec of a SQLAlchemy-pooled connection decodes; a bare asyncpg one gives text.
    if value is None or isinstance(value, dict):
        return value
    return orjson.loads(value)  # type: ignore[no-any-return]


async def save_checkpoint(
    conn: asyncpg.Connection, stream_key: str, checkpoint: dict[str, Any] | None, run_id: uuid.UUID
) -> None:
    """Progress inside an unfinished run (e.g. partitions done); None when the run completes."""
    await conn.execute(
        "INSERT INTO pipeline.stream_state AS s (stream, checkpoint, run_id, updated_at) "
        "VALUES ($1, $2::text::jsonb, $3, now()) "
        "ON CONFLICT (stream) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, "
        "run_id = EXCLUDED.run_id, updated_at = now()",
        stream_key,
        None if checkpoint is None else orjson.dumps(checkpoint).decode(),
        run_id,
    )


async def advance_watermark(
    conn: asyncpg.Connection, stream_key: str, watermark: datetime, run_id: uuid.UUID
) -> None:
    await conn.execute(
        "INSERT INTO pipeline.stream_state AS s (stream, watermark, run_id, updated_at) "
        "VALUES ($1, $2, $3, now()) "
        "ON CONFLICT (stream) DO UPDATE SET "
        "watermark = GREATEST(s.watermark, EXCLUDED.watermark), "
        "run_id = EXCLUDED.run_id, updated_at = now()",
        stream_key,
        watermark,
        run_id,
    )


async def forget(conn: asyncpg.Connection, stream_key: str) -> bool:
    """Drop a stream's state (watermark and checkpoint); its next run reads from the start."""
    status = await conn.execute("DELETE FROM pipeline.stream_state WHERE stream = $1", stream_key)
    return status.endswith(" 1")


async def forget_stream(conn: asyncpg.Connection, stream_key: str) -> list[str] | None:
    """`pipeline reset`: forget the stream's watermark and every checkpoint kept beside it
    (backfills, each backfill slice and plan, rederive; not the indexes a first load put off:
    `pipeline.statekeys`), holding the stream's lock meanwhile, so that no run writes its state
    back after. Returns what was forgotten, or None when a run holds the lock."""
    lock = lock_name(stream_key)
    if not await conn.fetchval(TRY_LOCK, lock):
        return None
    try:
        found = await conn.fetch(
            f"SELECT stream FROM pipeline.stream_state WHERE {OF_STREAM}", stream_key
        )
        keys = []
        for row in found:
            try:
                key = StateKey.parse(row["stream"])
            except ValueError:
                continue  # not a key this version writes: left alone
            if key.stream == stream_key and key.progress:
                keys.append(str(key))
        await conn.execute("DELETE FROM pipeline.stream_state WHERE stream = ANY($1)", keys)
        return keys
    finally:
        await conn.execute(UNLOCK, lock)
