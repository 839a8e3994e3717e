"""Run history (`pipeline.sync_runs`): one row per stream per run, kept current page by page.

A run that dies without finishing (killed, or its connection lost so its end could not be
written) leaves its row `running`. A run holds its stream's advisory lock (`pipeline.run.stream_run`) from before
its row is written until after its end is, and Postgres drops the lock with the session, so a
`running` row whose lock nobody holds is abandoned: `pipeline status` shows it `interrupted`
at once, without writing, and the next run of the stream, holding the lock itself (which proves
that no other run is alive), marks such rows `interrupted` in the table.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg

from pipeline.counts import PageResult
from pipeline.locks import PREFIX
from pipeline.logs import secrets
from pipeline.text import printable

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
        f"hashtextextended('{PREFIX}' || {stream}, 0))"
    )


# Who holds an advisory lock by name: the sessions of this database holding it, as far as
# pg_stat_activity shows them to us (a role without pg_read_all_stats sees other roles' pid and
# user, and not their application or address).
_LOCK_HOLDERS = (
    "SELECT l.pid, a.usename, a.application_name, host(a.client_addr) AS client_addr "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0) "
    "ORDER BY l.pid LIMIT 5"
)
RUN_ROW_WAITS, RUN_ROW_WAIT_SECONDS = 10, 0.1
_RUNNING = (
    "SELECT run_id, kind, started_at FROM pipeline.sync_runs WHERE stream = $1 "
    "AND status = 'running' ORDER BY started_at DESC, id DESC LIMIT 1"
)


async def why_locked(conn: asyncpg.Connection, stream_key: str, lock: str) -> str:
    """Why a run of `stream_key` could not take `lock`, for its `skipped` row: the run
    holding it, or the session that does when no run is recorded (any login may take an
    advisory lock: a neighbour can block a stream, and then this says whom to ask)."""
    holders = await conn.fetch(_LOCK_HOLDERS, lock)
    running = await conn.fetchrow(_RUNNING, stream_key)
    # A run writes its row just after it takes the lock: give it that moment before blaming
    # a stranger.
    for _ in range(RUN_ROW_WAITS):
        if running is not None:
            break
        await asyncio.sleep(RUN_ROW_WAIT_SECONDS)
        running = await conn.fetchrow(_RUNNING, stream_key)
    who = "; ".join(_session(h) for h in holders) or "a session that has let it go since"
    if running is not None:
        return (
            f"another run of this stream holds its lock ({running['kind']} run "
            f"{running['run_id']}, started {running['started_at'].isoformat(timespec='seconds')}; "
            f"held by {who}); skipped"
        )
    pids = ", ".join(str(h["pid"]) for h in holders)
    hint = f"; if it is not yours, end it with SELECT pg_terminate_backend({pids})" if pids else ""
    return (
        f"its advisory lock ({lock!r}) is held by {who}, and no run of this stream is "
        f"recorded: some other session is blocking it{hint}; skipped"
    )


def _session(holder: asyncpg.Record) -> str:
    parts = [f"backend pid {holder['pid']}"]
    if holder["usename"]:
        parts.append(f"user {holder['usename']!r}")
    if holder["application_name"]:
        parts.append(f"application {holder['application_name']!r}")
    if holder["client_addr"]:
        parts.append(f"from {holder['client_addr']}")
    return ", ".join(parts)


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


def stored_error(error: str | None) -> str | None:
    """An error as `sync_runs` keeps it: secrets masked, control characters escaped (it may
    quote a source's body, which a terminal showing `status` must not obey)."""
    return printable(secrets.redact(error)) if error else None


async def finish(
    conn: asyncpg.Connection,
    row_id: int,
    status: str,
    *,
    watermark_after: datetime | None,
    deleted: int = 0,
    error: str | None = None,
    held_deletes: int = 0,
) -> None:
    await conn.execute(
        "UPDATE pipeline.sync_runs SET status = $2, finished_at = now(), watermark_after = $3, "
        "deleted = deleted + $4, error = $5, held_deletes = $6 WHERE id = $1",
        row_id,
        status,
        watermark_after,
        deleted,
        stored_error(error),
        held_deletes,
    )


async def not_run(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    stream_key: str,
    kind: str,
    status: str,
    reason: str,
    watermark: datetime | None = None,
) -> None:
    """A run that did not start: `skipped` (its stream's lock was held), `failed` (no
    connection for it), `interrupted` (stopped while it waited for its turn). One finished row,
    so monitoring and `status` see that it did not run instead of a silence."""
    await conn.execute(
        "INSERT INTO pipeline.sync_runs (run_id, stream, kind, status, finished_at, "
        "watermark_before, watermark_after, error) "
        "VALUES ($1, $2, $3, $4, now(), $5, $5, $6)",
        run_id,
        stream_key,
        kind,
        status,
        watermark,
        stored_error(reason),
    )


async def explain_interruption(conn: asyncpg.Connection, run_id: uuid.UUID, why: str) -> None:
    """Say who or what stopped a run that ended `interrupted` (a requested abort)."""
    await conn.execute(
        "UPDATE pipeline.sync_runs SET error = $2 WHERE run_id = $1 AND status = 'interrupted'",
        run_id,
        stored_error(why),
    )
