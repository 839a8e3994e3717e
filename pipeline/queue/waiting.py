"""`pipeline sync` with the queue backend: wait for the deferred jobs, then report as always.

What a job did is read where every run writes it (`sync_runs`, under the job's run id), so the
outcome table and the exit code are the local backend's. A job retried after its worker died
or stopped has several rows under its run id; the latest tells. Stopping the wait (Ctrl-C)
leaves the jobs to the workers.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.counts import PageResult
from pipeline.logs import get_logger
from pipeline.queue.defer import Deferred
from pipeline.report import shown
from pipeline.run import StreamOutcome
from pipeline.tables import QUEUE_SCHEMA

log = get_logger(__name__)

# A job's end is noticed within POLL_SECONDS: a look-up of the jobs by primary key, cheap
# enough to make often. Their runs' rows (for the progress shown, and the outcome) are read
# when a job's state changed, and every RUNS_EVERY polls otherwise.
POLL_SECONDS = 0.1
RUNS_EVERY = 5
FINISHED = ("succeeded", "failed", "cancelled", "aborted")

_JOBS = (
    f"SELECT id, status::text, attempts FROM {QUEUE_SCHEMA}.procrastinate_jobs WHERE id = ANY($1)"
)
_RUNS = (
    "SELECT DISTINCT ON (run_id, stream) run_id, stream, status, pages, records_read, inserted, "
    "updated, unchanged, quarantined, deleted, held_deletes, watermark_after, error, "
    "extract(epoch FROM coalesce(finished_at, now()) - started_at)::float8 AS seconds "
    "FROM pipeline.sync_runs WHERE run_id = ANY($1) ORDER BY run_id, stream, id DESC"
)


@dataclass
class JobProgress:
    deferred: Deferred
    job_status: str = "todo"
    attempts: int = 0
    run: Any = None  # its latest sync_runs row

    @property
    def key(self) -> str:
        return self.deferred.job.stream

    @property
    def finished(self) -> bool:
        return self.job_status in FINISHED

    def label(self) -> str:
        if self.job_status == "todo":
            return "waiting" if not self.attempts else "waiting (retry)"
        if self.job_status == "doing":
            return "running"
        return self.outcome().status

    def outcome(self) -> StreamOutcome:
        row = self.run
        if row is None:
            if self.job_status == "succeeded":  # ran, but another run held the stream's lock
                return StreamOutcome(
                    self.key, "skipped", error="another run of this stream holds its lock; skipped"
                )
            error = (
                f"{self.key}: job {self.job_status} before its run started; see the worker's log"
            )
            return StreamOutcome(self.key, "failed", error=error)
        status = row["status"]
        if status == "running" and self.job_status in ("cancelled", "aborted"):
            status = "interrupted"
        return StreamOutcome(
            self.key,
            status,
            totals=PageResult(
                read=row["records_read"],
                inserted=row["inserted"],
                updated=row["updated"],
                unchanged=row["unchanged"],
                quarantined=row["quarantined"],
            ),
            pages=row["pages"],
            deleted=row["deleted"],
            held_deletes=row["held_deletes"],
            seconds=row["seconds"],
            watermark=row["watermark_after"],
            error=row["error"],
        )


async def wait_for(
    conn: asyncpg.Connection, deferred: Sequence[Deferred], console: Console
) -> list[StreamOutcome]:
    """Poll the jobs and their runs until every job has finished; show them meanwhile."""
    progress = [JobProgress(d) for d in deferred]
    by_id = {p.deferred.job_id: p for p in progress}
    run_ids = [uuid.UUID(p.deferred.job.run_id) for p in progress]
    display = _Display(console, progress)
    with display:
        for poll in itertools.count():
            changed = False
            for row in await conn.fetch(_JOBS, list(by_id)):
                job = by_id[row["id"]]
                changed |= (job.job_status, job.attempts) != (row["status"], row["attempts"])
                job.job_status, job.attempts = row["status"], row["attempts"]
            if changed or poll % RUNS_EVERY == 0:
                runs = {
                    (str(r["run_id"]), r["stream"]): r for r in await conn.fetch(_RUNS, run_ids)
                }
                for p in progress:
                    p.run = runs.get((p.deferred.job.run_id, p.key))
                display.update()
                if all(p.finished for p in progress):
                    break
            await asyncio.sleep(POLL_SECONDS)
    return [p.outcome() for p in progress]


class _Display:
    """A live table on a terminal; a log line per change of a job's state otherwise."""

    def __init__(self, console: Console, progress: list[JobProgress]) -> None:
        self.console = console
        self.progress = progress
        self.shown: dict[int, str] = {}
        self.started = time.monotonic()
        self.live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            return
        for p in self.progress:
            label = p.label()
            if self.shown.get(p.deferred.job_id) != label:
                self.shown[p.deferred.job_id] = label
                log.info(
                    "job_progress",
                    stream=p.key,
                    job_id=p.deferred.job_id,
                    state=label,
                    records=p.run["records_read"] if p.run is not None else 0,
                )

    def _table(self) -> Table:
        table = Table(title=f"jobs ({time.monotonic() - self.started:.0f} s)", title_justify="left")
        for header in ("stream", "job", "state", "pages", "records"):
            table.add_column(
                header, justify="right" if header in ("job", "pages", "records") else "left"
            )
        for p in self.progress:
            run = p.run
            table.add_row(
                shown(p.key),
                str(p.deferred.job_id),
                p.label(),
                str(run["pages"] if run is not None else 0),
                str(run["records_read"] if run is not None else 0),
            )
        return table


__all__ = ["JobProgress", "wait_for"]
