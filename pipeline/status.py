"""What `pipeline status` shows: per stream, how far it got, how its last run ended, its rows,
and whether it is fresh: a configured, enabled stream whose last success is older than twice
its schedule's period (or that never succeeded) is stale. Monitoring reads `--json`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline import history
from pipeline.config import Settings
from pipeline.cron import period
from pipeline.queue.jobs import StreamJobs, jobs_by_stream
from pipeline.sources import SOURCES
from pipeline.streams import SourceSpec, Stream
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
    # With the queue backend: its jobs waiting, running and failed (`pipeline.queue.jobs`).
    jobs: StreamJobs | None = None

    @property
    def failed(self) -> bool:
        return self.last_run_status == "failed"

    @property
    def needs_attention(self) -> bool:
        """Configured, and stale, or its last run failed, did not run (its lock was held), or
        held back deletions."""
        return self.configured and (self.stale or self.last_run_status in ATTENTION)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.jobs is None:
            del out["jobs"]
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.astimezone(UTC).isoformat()
        out["failed"] = self.failed
        out["needs_attention"] = self.needs_attention
        return out


_LAST_RUN = sa.text(
    "SELECT id, started_at, finished_at, status, error, "
    f"status = 'running' AND NOT {history.stream_lock_held('stream')} AS lock_free "
    "FROM pipeline.sync_runs WHERE stream = :stream "
    "AND kind = 'sync' AND status <> 'skipped' ORDER BY started_at DESC, id DESC LIMIT 1"
)
_LAST_SKIP = sa.text(
    "SELECT started_at, error FROM pipeline.sync_runs WHERE stream = :stream "
    "AND kind = 'sync' AND status = 'skipped' ORDER BY started_at DESC, id DESC LIMIT 1"
)
_STILL_RUNNING = sa.text("SELECT status = 'running' FROM pipeline.sync_runs WHERE id = :id")
# A run whose deletions were held (`max_delete_fraction`) loaded its data: fresh, though
# `status` flags it until the deletions are confirmed or the source is fixed.
_LAST_SUCCESS = sa.text(
    "SELECT max(finished_at) FROM pipeline.sync_runs "
    "WHERE stream = :stream AND status IN ('succeeded', 'held') AND kind = 'sync'"
)
# Statuses of a stream's last run that need a person, besides staleness.
ATTENTION = ("failed", "skipped", "held")
_WATERMARK = sa.text("SELECT watermark FROM pipeline.stream_state WHERE stream = :stream")


async def _last_run(conn: AsyncConnection, params: dict[str, Any]) -> tuple[Any, ...] | None:
    """The stream's last sync run as (started, status, error); a `running` one whose lock nobody
    holds is `interrupted` (see `pipeline.history`), judged without writing anything. A skip
    (the lock was held) is the last run only when it came after the last real run ended: a
    second scheduler skipping while the first runs is not news; a stream whose every firing
    finds its lock taken by someone else is.

    The row is read again after the lock was found free: a run is alive from before its row is
    written until after its end is, so a row still `running` after its lock was seen free
    belongs to a run that died (a run that merely ended in between reads as ended)."""
    row = (await conn.execute(_LAST_RUN, params)).first()
    skip = (await conn.execute(_LAST_SKIP, params)).first()
    if skip is not None and (
        row is None or (row.finished_at is not None and skip.started_at > row.finished_at)
    ):
        return skip.started_at, "skipped", skip.error
    if row is None:
        return None
    if row.lock_free and (await conn.execute(_STILL_RUNNING, {"id": row.id})).scalar():
        return row.started_at, "interrupted", row.error or history.ABANDONED
    if row.lock_free:  # it ended meanwhile: show how
        row = (await conn.execute(_LAST_RUN, params)).first()
        assert row is not None
    return row.started_at, row.status, row.error


def _entries(settings: Settings | None) -> list[tuple[SourceSpec, Stream, StreamTarget | None]]:
    """Every configured instance's streams, then the streams of source types no instance is
    configured for (shown as not configured, under the type's name)."""
    entries: list[tuple[SourceSpec, Stream, StreamTarget | None]] = []
    configured_types = set()
    for config in settings.sources.values() if settings else []:
        spec = SOURCES[config.type]
        configured_types.add(spec.name)
        entries += [(spec, stream, StreamTarget(spec, stream, config)) for stream in spec.streams]
    for spec in SOURCES.values():
        if spec.name not in configured_types:
            entries += [(spec, stream, None) for stream in spec.streams]
    return entries


async def stream_statuses(
    engine: AsyncEngine,
    settings: Settings | None = None,
    now: datetime | None = None,
    only: Collection[str] | None = None,
) -> list[StreamStatus]:
    """`only`: the stream keys wanted (the dashboard's page of one stream); default all."""
    now = now or datetime.now(UTC)
    out = []
    # Each statement its own snapshot, whatever the server's default isolation (`_last_run`).
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        queued = settings is not None and settings.execution.backend == "queue"
        jobs = await jobs_by_stream(conn) if queued else {}
        for spec, stream, target in _entries(settings):
            key = target.key if target else f"{spec.name}.{stream.name}"
            if only is not None and key not in only:
                continue
            params = {"stream": key}
            last = await _last_run(conn, params)
            last_success = (await conn.execute(_LAST_SUCCESS, params)).scalar()
            live, deleted = (
                await conn.execute(
                    sa.text(
                        "SELECT count(*) FILTER (WHERE _deleted_at IS NULL), "
                        "count(*) FILTER (WHERE _deleted_at IS NOT NULL) "
                        f'FROM "{spec.schema}"."{stream.name}" WHERE _source = :source'
                    ),
                    {"source": target.instance if target else spec.name},
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
                    jobs=jobs.get(key, StreamJobs()) if queued else None,
                )
            )
    return out


def needs_attention(statuses: list[StreamStatus]) -> bool:
    """What makes `pipeline status` exit 1: a configured stream that is stale, failed, did not
    run, or held back deletions."""
    return any(s.needs_attention for s in statuses)
