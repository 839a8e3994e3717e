"""Run history (`pipeline.sync_runs`): one row per stream per run, kept current page by page.

A run that dies without finishing leaves its row `running`; the next run of the stream, once it
holds the stream's lock (so nothing else can be running it), marks such rows `interrupted`.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from pipeline.load import PageResult
from pipeline.logs import secrets


async def close_abandoned(conn: asyncpg.Connection, stream_key: str) -> int:
    status = await conn.execute(
        "UPDATE pipeline.sync_runs SET status = 'interrupted', finished_at = now(), "
        "error = coalesce(error, 'the process ended before the run finished') "
        "WHERE stream = $1 AND status = 'running'",
        stream_key,
    )
    return int(status.split()[-1])


async def begin(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    stream_key: str,
    kind: str,
    watermark_before: datetime | None,
) -> int:
    row_id: int = await conn.fetchval(
        "INSERT INTO pipeline.sync_runs (run_id, stream, kind, status, watermark_before) "
        "VALUES ($1, $2, $3, 'running', $4) RETURNING id",
        run_id,
        stream_key,
        kind,
        watermark_before,
    )
    return row_id


async def add_page(
    conn: asyncpg.Connection, row_id: int, result: PageResult, pages: int = 1
) -> None:
    await conn.execute(
        "UPDATE pipeline.sync_runs SET pages = pages + $2, records_read = records_read + $3, "
        "inserted = inserted + $4, updated = updated + $5, unchanged = unchanged + $6, "
        "quarantined = quarantined + $7 WHERE id = $1",
        row_id,
        pages,
        result.read,
        result.inserted,
        result.updated,
        result.unchanged,
        result.quarantined,
    )


async def finish(
    conn: asyncpg.Connection,
    row_id: int,
    status: str,
    *,
    watermark_after: datetime | None,
    deleted: int = 0,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE pipeline.sync_runs SET status = $2, finished_at = now(), watermark_after = $3, "
        "deleted = deleted + $4, error = $5 WHERE id = $1",
        row_id,
        status,
        watermark_after,
        deleted,
        secrets.redact(error) if error else None,
    )
