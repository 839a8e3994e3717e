"""The procrastinate app of the queue backend, its one task, and what a job carries.

A job names a stream by its key and a run by its id: the worker reads its own configuration
(credentials stay on the machines that run jobs; the job's row holds none) and runs the stream
exactly as the local backend does. Two locks shape the queue: `lock` = the stream's key, so
one job of a stream runs at a time across workers (the stream's advisory lock stays underneath
as the safety net), and `queueing_lock` = key and kind, so at most one waits.

A job whose worker is asked to stop ends at a page boundary and is retried at once, by another
worker or this one's successor; its run resumes from what was committed.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import procrastinate
from procrastinate import JobContext, RetryDecision
from procrastinate.retry import BaseRetryStrategy

from pipeline import statekeys
from pipeline.db import plain_url
from pipeline.tables import QUEUE_SCHEMA

if TYPE_CHECKING:
    from procrastinate.jobs import Job

TASK_NAME = "pipeline.run_stream"
QUEUE = "streams"


class StoppedForShutdown(Exception):
    """The worker was asked to stop: the run ended at a page boundary; the job runs again."""


class DatabaseLost(Exception):
    """The run failed because the database went away; it is retried after a pause."""


class StreamRunFailed(Exception):
    """The stream's run failed (its error is in `sync_runs`); retrying is the next run's job."""


@dataclass(frozen=True)
class StreamJob:
    """One run of one stream, as a job's arguments (JSON)."""

    stream: str  # the target's key: `<instance>.<stream>`
    kind: str  # sync | reconcile | backfill
    run_id: str
    since: str | None = None
    until: str | None = None
    dry_run: bool = False
    sliced: bool = False  # one window of a backfill split in slices
    confirm_deletes: bool = False  # `reconcile --confirm-deletes`

    @classmethod
    def new(cls, key: str, mode: Any, run_id: uuid.UUID | None = None) -> StreamJob:
        return cls(
            stream=key,
            kind=mode.kind,
            run_id=str(run_id or uuid.uuid4()),
            since=_iso(mode.since),
            until=_iso(mode.until),
            dry_run=mode.dry_run,
            sliced=mode.sliced,
            confirm_deletes=mode.confirm_deletes,
        )

    @property
    def lock(self) -> str:
        """One running job per stream; a backfill slice is a window of its own."""
        if self.kind == "backfill":
            return str(statekeys.backfill(self.stream, f"{self.since}..{self.until}"))
        return self.stream

    @property
    def queueing_lock(self) -> str | None:
        """At most one waiting sync (reconcile) per stream; backfills are asked for by name."""
        return None if self.kind == "backfill" else f"{self.stream}:{self.kind}"

    def args(self) -> dict[str, Any]:
        return asdict(self)

    def mode(self) -> Any:
        from pipeline.run import Mode

        return Mode(
            self.kind,
            since=_moment(self.since),
            until=_moment(self.until),
            dry_run=self.dry_run,
            sliced=self.sliced,
            confirm_deletes=self.confirm_deletes,
        )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


DATABASE_RETRY_SECONDS = 5
DATABASE_RETRIES = 12  # a minute of a database away; then the job fails


class RetryWhenStopped(BaseRetryStrategy):
    """Retry a job its worker stopped (SIGTERM, or cancelled after the grace time) at once, and
    one the database failed under after a pause; never one whose source failed (the HTTP
    client has retried already; the next scheduled run is the retry)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, StoppedForShutdown):
            return RetryDecision(retry_in={"seconds": 0})
        if isinstance(exception, DatabaseLost) and job.attempts < DATABASE_RETRIES:
            return RetryDecision(retry_in={"seconds": DATABASE_RETRY_SECONDS})
        return None


def queue_app(database_url: str, *, pool_size: int = 4) -> procrastinate.App:
    """The app on the pipeline's database; procrastinate's connections find its tables in the
    queue schema first."""
    connector = procrastinate.PsycopgConnector(
        conninfo=plain_url(database_url),
        kwargs={"options": f"-c search_path={QUEUE_SCHEMA}", "application_name": "pipeline"},
        min_size=1,
        max_size=pool_size,
    )
    app = procrastinate.App(connector=connector)
    app.task(name=TASK_NAME, queue=QUEUE, pass_context=True, retry=RetryWhenStopped())(
        run_stream_job
    )
    return app


async def run_stream_job(
    context: JobContext, timestamp: int | None = None, **args: Any
) -> dict[str, Any]:
    """The task: run the job's stream with the worker's resources (`pipeline.queue.worker`).
    `timestamp`: the schedule firing a job was deferred for (`pipeline.queue.defer`)."""
    from pipeline.queue.worker import run_job

    return await run_job(context, StreamJob(**args))


__all__ = [
    "QUEUE",
    "TASK_NAME",
    "DatabaseLost",
    "RetryWhenStopped",
    "StoppedForShutdown",
    "StreamJob",
    "StreamRunFailed",
    "queue_app",
]
