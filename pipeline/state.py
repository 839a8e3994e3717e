"""Incremental state per stream (`pipeline.stream_state`).

The watermark is only ever written inside the transaction that stores the data it covers, and
never moves backwards: a backfill or a replay can re-read old data without forgetting how far
the stream had got.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class StreamState:
    watermark: datetime | None = None
    updated_at: datetime | None = None


async def read_state(conn: asyncpg.Connection, stream_key: str) -> StreamState:
    row = await conn.fetchrow(
        "SELECT watermark, updated_at FROM pipeline.stream_state WHERE stream = $1", stream_key
    )
    return StreamState(row["watermark"], row["updated_at"]) if row else StreamState()


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
