"""What the overview, stream and jobs pages show, read from the database.

Freshness is `pipeline status`'s (`pipeline.status.stream_statuses`): a stream is late when its
last success is older than twice its schedule's period, on the page as in the command. These
functions take the dashboard's read-only engine; none of them writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.cron import cron_trigger, period
from pipeline.dashboard.quarantine import ReasonCount, reason_counts
from pipeline.logs import secrets
from pipeline.queue.jobs import StreamJobs, jobs_by_stream
from pipeline.status import ATTENTION, StreamStatus, stream_statuses
from pipeline.targets import select_streams

WINDOW = timedelta(days=30)  # the stream page's charts
HISTORY_ROWS = 100  # the stream page's run table


@dataclass(frozen=True)
class RunCounts:
    """What a run read and wrote; `written` = inserted + updated + deleted."""

    started_at: datetime
    status: str
    read: int
    inserted: int
    updated: int
    deleted: int
    quarantined: int
    written: int


@dataclass(frozen=True)
class Cell:
    """One stream of one source instance on the overview. `state` is what the cell says
    first: failed, late, interrupted, running, ok, never (not run, not expected yet),
    disabled, or unconfigured (rows or history of a stream no instance configures)."""

    key: str
    instance: str
    stream: str
    state: str
    configured: bool
    enabled: bool
    schedule: str | None
    period_seconds: float | None
    last_run_status: str | None
    last_run_started: datetime | None
    last_success: datetime | None
    age_seconds: float | None
    late: bool
    failed: bool
    live_rows: int
    deleted_rows: int
    watermark: datetime | None
    last_run: RunCounts | None
    quarantined: int
    next_run: datetime | None
    error: str | None
    jobs: StreamJobs | None


@dataclass(frozen=True)
class InstanceRow:
    instance: str
    cells: list[Cell]


@dataclass(frozen=True)
class Overview:
    generated_at: datetime
    instances: list[InstanceRow]
    failed: int
    late: int
    queue: bool
    # Did not run (its lock was held by someone else) or held back deletions: a person's call.
    attention: int = 0


def _state(s: StreamStatus) -> str:
    if not s.configured:
        return "unconfigured"
    if s.failed:
        return "failed"
    if s.last_run_status in ATTENTION:  # skipped (its lock held elsewhere) or held deletions
        return s.last_run_status
    if s.stale:
        return "late"
    if s.last_run_status in ("interrupted", "running"):
        return s.last_run_status
    if not s.enabled:
        return "disabled"
    return "ok" if s.last_success else "never"


_LAST_RUNS = sa.text(
    """
    SELECT k.stream, r.started_at, r.status, r.records_read, r.inserted, r.updated,
           r.deleted, r.quarantined
    FROM unnest(CAST(:keys AS text[])) AS k(stream)
    CROSS JOIN LATERAL (
        SELECT * FROM pipeline.sync_runs s WHERE s.stream = k.stream AND s.kind = 'sync'
        ORDER BY s.started_at DESC, s.id DESC LIMIT 1
    ) r
    """
)
_QUARANTINED = sa.text(
    "SELECT stream, count(*) AS n FROM pipeline.quarantine "
    "WHERE stream = ANY(CAST(:keys AS text[])) GROUP BY stream"
)


def _counts(row: Any) -> RunCounts:
    return RunCounts(
        started_at=row.started_at,
        status=row.status,
        read=row.records_read,
        inserted=row.inserted,
        updated=row.updated,
        deleted=row.deleted,
        quarantined=row.quarantined,
        written=row.inserted + row.updated + row.deleted,
    )


async def cells(
    engine: AsyncEngine, settings: Settings, now: datetime, only: list[str] | None = None
) -> list[Cell]:
    """Every stream's cell (or those of the keys in `only`); streams no instance configures
    are left out unless they have rows or history."""
    statuses = await stream_statuses(engine, settings, now, only=only)
    keys = [s.key for s in statuses]
    async with engine.connect() as conn:
        last_runs = {r.stream: _counts(r) for r in await conn.execute(_LAST_RUNS, {"keys": keys})}
        quarantined = {r.stream: r.n for r in await conn.execute(_QUARANTINED, {"keys": keys})}
    out = []
    for s in statuses:
        if not s.configured and not (s.live_rows or s.deleted_rows or s.last_run_status):
            continue
        instance, _, stream = s.key.partition(".")
        scheduled = s.enabled and s.schedule is not None
        out.append(
            Cell(
                key=s.key,
                instance=instance,
                stream=stream,
                state=_state(s),
                configured=s.configured,
                enabled=s.enabled,
                schedule=s.schedule,
                period_seconds=period(s.schedule, now).total_seconds()
                if s.schedule and scheduled
                else None,
                last_run_status=s.last_run_status,
                last_run_started=s.last_run_started,
                last_success=s.last_success,
                age_seconds=s.age_seconds,
                late=s.stale,
                failed=s.failed,
                live_rows=s.live_rows,
                deleted_rows=s.deleted_rows,
                watermark=s.watermark,
                last_run=last_runs.get(s.key),
                quarantined=quarantined.get(s.key, 0),
                next_run=cron_trigger(s.schedule).get_next_fire_time(None, now)
                if s.schedule and scheduled
                else None,
                error=secrets.redact(s.last_error) if s.last_error else None,
                jobs=s.jobs,
            )
        )
    return out


async def overview(engine: AsyncEngine, settings: Settings, now: datetime) -> Overview:
    rows: dict[str, list[Cell]] = {}
    for cell in await cells(engine, settings, now):
        rows.setdefault(cell.instance, []).append(cell)
    instances = [InstanceRow(name, found) for name, found in sorted(rows.items())]
    every = [c for row in instances for c in row.cells]
    return Overview(
        generated_at=now,
        instances=instances,
        failed=sum(c.state == "failed" for c in every),
        late=sum(c.state == "late" for c in every),
        queue=settings.execution.backend == "queue",
        attention=sum(c.state in ("skipped", "held") for c in every),
    )


# ---- one stream ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    pages: int
    read: int
    inserted: int
    updated: int
    unchanged: int
    deleted: int
    quarantined: int
    written: int
    watermark_before: datetime | None
    watermark_after: datetime | None
    error: str | None


@dataclass(frozen=True)
class StateRow:
    """A row of `pipeline.stream_state`: the stream's own, or a backfill's or rederive's
    (`<key>#backfill...`), shown as stored."""

    stream: str
    watermark: datetime | None
    checkpoint: Any
    updated_at: datetime


@dataclass(frozen=True)
class StreamPage:
    key: str
    cell: Cell | None
    since: datetime
    runs: list[Run]  # in the window, oldest first: the charts
    history: list[Run]  # the latest, newest first
    state: list[StateRow]
    quarantine: list[ReasonCount]
    quarantined: int


_RUN_COLUMNS = (
    "id, kind, status, started_at, finished_at, "
    "extract(epoch FROM finished_at - started_at) AS duration_seconds, pages, records_read, "
    "inserted, updated, unchanged, deleted, quarantined, watermark_before, watermark_after, error"
)
_WINDOW_RUNS = sa.text(
    f"SELECT {_RUN_COLUMNS} FROM pipeline.sync_runs WHERE stream = :key AND started_at >= :since "
    "ORDER BY started_at, id"
)
_HISTORY = sa.text(
    f"SELECT {_RUN_COLUMNS} FROM pipeline.sync_runs WHERE stream = :key "
    "ORDER BY started_at DESC, id DESC LIMIT :limit"
)
_STATE = sa.text(
    "SELECT stream, watermark, checkpoint, updated_at FROM pipeline.stream_state "
    "WHERE stream = :key OR left(stream, length(:key) + 1) = :key || '#' ORDER BY stream"
)


def _run(row: Any) -> Run:
    return Run(
        id=row.id,
        kind=row.kind,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_seconds=float(row.duration_seconds) if row.duration_seconds is not None else None,
        pages=row.pages,
        read=row.records_read,
        inserted=row.inserted,
        updated=row.updated,
        unchanged=row.unchanged,
        deleted=row.deleted,
        quarantined=row.quarantined,
        written=row.inserted + row.updated + row.deleted,
        watermark_before=row.watermark_before,
        watermark_after=row.watermark_after,
        error=secrets.redact(row.error) if row.error else None,
    )


async def stream_page(
    engine: AsyncEngine, settings: Settings, key: str, now: datetime
) -> StreamPage | None:
    """None when nothing is known of `key`: not configured, never run, no state. The cell
    (which counts the table's rows) is read beside the history, on a connection of its own."""
    since = now - WINDOW
    found, (runs, history, state, reasons) = await asyncio.gather(
        cells(engine, settings, now, only=[key]), _history(engine, key, since)
    )
    if not (found or history or state):
        return None
    return StreamPage(
        key=key,
        cell=found[0] if found else None,
        since=since,
        runs=runs,
        history=history,
        state=state,
        quarantine=reasons,
        quarantined=sum(r.records for r in reasons),
    )


async def _history(
    engine: AsyncEngine, key: str, since: datetime
) -> tuple[list[Run], list[Run], list[StateRow], list[ReasonCount]]:
    async with engine.connect() as conn:
        runs = [_run(r) for r in await conn.execute(_WINDOW_RUNS, {"key": key, "since": since})]
        history = [
            _run(r) for r in await conn.execute(_HISTORY, {"key": key, "limit": HISTORY_ROWS})
        ]
        state = [
            StateRow(r.stream, r.watermark, r.checkpoint, r.updated_at)
            for r in await conn.execute(_STATE, {"key": key})
        ]
        reasons = await reason_counts(conn, key)
    return runs, history, state, reasons


# ---- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobsRow:
    stream: str
    jobs: StreamJobs


@dataclass(frozen=True)
class JobsPage:
    queue: bool  # false: the queue backend is not configured, runs happen in-process
    streams: list[JobsRow]


async def jobs_page(engine: AsyncEngine, settings: Settings) -> JobsPage:
    if settings.execution.backend != "queue":
        return JobsPage(queue=False, streams=[])
    async with engine.connect() as conn:
        counts = await jobs_by_stream(conn)
    configured = [t.key for t in select_streams(settings, [])]
    keys = configured + sorted(set(counts) - set(configured))
    return JobsPage(queue=True, streams=[JobsRow(k, counts.get(k, StreamJobs())) for k in keys])
