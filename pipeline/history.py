"""Run history (`pipeline.sync_runs`): one row per stream per run, kept current page by page.

A run that dies without finishing (killed, or its connection lost so its end could not be
written) leaves its row `running`. A run holds its stream's advisory lock (`pipeline.run.stream_run`) from before
its row is written until after its end is, and Postgres drops the lock with the session, so a
`running` row whose lock nobody holds is abandoned: `pipeline status` shows it `interrupted`
at once, without writing, and the next run of the stream, holding the lock itself (which proves
that no other run is alive), marks such rows `interrupted` in the table.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from pipeline.counts import PageResult
from pipeline.logs import secrets

ABANDONED = (
    "the run ended without recording its end: its process died or lost its database connection"
)


def stream_lock_held(stream: str) -> str:
    """SQL: whether any session holds the advisory lock the runner takes for the stream named
    by the SQL expression `stream` (`pg_try_advisory_lock(hashtextextended('pipeline.stream:'
    || key, 0))`: a bigint key shows in pg_locks as classid, objid and objsubid 1)."""
    return (
        "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = "
        f"hashtextextended('pipeline.stream:' || {stream}, 0))"
    )


async def close_abandoned(conn: asyncpg.Connection, stream_key: str) -> int:
    """Called holding the stream's lock: every `running` row of the stream is abandoned."""
    status = await conn.execute(
        "UPDATE pipeline.sync_runs SET status = 'interrupted', finished_at = now(), "
        "error = coalesce(error, $2) WHERE stream = $1 AND status = 'running'",
        stream_key,
        ABANDONED,
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
