"""`pipeline worker`: runs stream jobs from the queue until asked to stop.

- A first SIGTERM / Ctrl-C stops taking jobs; running streams end at their next page boundary
  (the page being written commits) and their jobs go back to the queue at once, for another
  worker. After `grace` seconds, or on a second signal, what still runs is cancelled (a
  transaction in flight rolls back) and its job goes back too.
- A worker killed outright (`kill -9`, its machine lost) stops writing its heartbeat; every
  live worker looks for jobs of workers silent longer than `stalled_after_seconds` and puts
  them back in the queue. The run resumes from what it committed: nothing lost, nothing
  doubled (state moves only with data).
- A database that goes away (restart, failover) ends the worker's loop; it connects again with
  a growing pause, and the jobs it was running are found stalled and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import procrastinate
import structlog
from procrastinate import JobContext
from procrastinate.job_context import AbortReason
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db, dberrors, history
from pipeline.config import ConfigError, Settings
from pipeline.extract.limits import LimitsBySource
from pipeline.logs import get_logger, secrets
from pipeline.queue.app import (
    QUEUE,
    TASK_NAME,
    DatabaseLost,
    StoppedForShutdown,
    StreamJob,
    StreamRunFailed,
    queue_app,
)
from pipeline.queue.guarded import GuardedWorker

log = get_logger(__name__)

RESOURCES = "pipeline"  # the key of `WorkerResources` in a job's additional context
RECONNECT_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class WorkerResources:
    """What jobs of one worker process share: settings, database, each source's limits (as one
    process's runs always do), and the stop that ends runs at a page boundary. `aborts`: who
    asked for a job's abort, by job id, written by the worker before it cancels the job
    (`pipeline.queue.guarded`), read by the job for its run's history."""

    settings: Settings
    engine: AsyncEngine
    limits: LimitsBySource
    stop: asyncio.Event
    aborts: dict[int, str] = field(default_factory=dict)


async def run_job(context: JobContext, job: StreamJob) -> dict[str, Any]:
    from pipeline.run import Runner
    from pipeline.targets import select_streams

    resources: WorkerResources = context.additional_context[RESOURCES]
    with structlog.contextvars.bound_contextvars(
        job_id=context.job.id, attempt=context.job.attempts
    ):
        try:
            targets = [
                t for t in select_streams(resources.settings, [job.stream]) if t.key == job.stream
            ]
        except ConfigError:
            targets = []
        if not targets:
            error = (
                f"{job.stream}: this worker ({socket.gethostname()}) has no such stream in its "
                "configuration; give every worker the same pipeline.toml"
            )
            await _record_refusal(resources.engine, job, error)
            raise StreamRunFailed(error)
        runner = Runner(
            resources.engine,
            run_id=uuid.UUID(job.run_id),
            mode=job.mode(),
            stop=resources.stop,
            limits=resources.limits,
        )
        try:
            [outcome] = await runner.run(targets)
        except asyncio.CancelledError:
            reason = context.abort_reason()
            if reason is AbortReason.SHUTDOWN:
                raise StoppedForShutdown(f"{job.stream}: cancelled after the grace time") from None
            if reason is AbortReason.USER_REQUEST and context.job.id is not None:
                who = resources.aborts.pop(context.job.id, "aborted on request")
                await _record_abort(resources.engine, job, who)
            raise
        if outcome.status == "interrupted" and resources.stop.is_set():
            raise StoppedForShutdown(f"{job.stream}: stopped at a page boundary")
        if outcome.status == "failed" and outcome.database_lost:
            raise DatabaseLost(outcome.error or f"{job.stream}: the database went away")
        if outcome.status in ("failed", "interrupted", "skipped"):
            # A skip is a job that did not do its work (another session held the lock).
            raise StreamRunFailed(outcome.error or f"{job.stream}: {outcome.status}")
        return {"status": outcome.status, "records": outcome.totals.read}


async def _record_refusal(engine: AsyncEngine, job: StreamJob, error: str) -> None:
    """A job this worker cannot run still leaves a failed run, so the one waiting sees why."""
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        conn: Any = raw.driver_connection
        row = await history.begin(conn, uuid.UUID(job.run_id), job.stream, job.kind, None)
        await history.finish(conn, row, "failed", watermark_after=None, deleted=0, error=error)


async def _record_abort(engine: AsyncEngine, job: StreamJob, who: str) -> None:
    """The run a requested abort stopped says who asked (its row was ended `interrupted`)."""
    try:
        async with engine.connect() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            await history.explain_interruption(raw.driver_connection, uuid.UUID(job.run_id), who)
            await sa_conn.commit()
    except dberrors.DATABASE_ERRORS as exc:
        log.error("run_history_not_written", error=str(exc))


async def retry_stalled_jobs(app: procrastinate.App, *, stalled_after: float, every: float) -> None:
    """Put back in the queue the jobs of workers whose heartbeat lapsed. Every worker does
    it; a job another worker already put back is skipped."""
    while True:
        await asyncio.sleep(every)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                task_name=TASK_NAME, seconds_since_heartbeat=stalled_after
            )
        except Exception as exc:  # the database is away: the worker loop notices too
            log.warning("stalled_jobs_not_checked", error=str(exc))
            continue
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
            except Exception:
                continue  # another worker was first
            log.warning(
                "stalled_job_retried",
                job_id=job.id,
                stream=job.task_kwargs.get("stream"),
                dead_worker=job.worker_id,
                reason=f"its worker sent no heartbeat for {stalled_after:g} s",
            )


async def serve(
    settings: Settings,
    database_url: str,
    *,
    concurrency: int,
    stop: asyncio.Event,
    grace_seconds: float,
) -> None:
    """Run jobs until `stop` is set; reconnect whenever the database goes away."""
    engine = db.create_engine(database_url, pool_size=concurrency + 1)
    resources = WorkerResources(settings, engine, LimitsBySource(), stop)
    name = f"{socket.gethostname()}:{os.getpid()}"
    failures = 0
    try:
        while not stop.is_set():
            app = queue_app(database_url, pool_size=concurrency + 3)
            try:
                async with app.open_async():
                    log.info("worker_started", worker=name, concurrency=concurrency)
                    failures = 0
                    await _work(app, resources, name, concurrency, grace_seconds)
            except Exception as exc:
                if stop.is_set():
                    break
                pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
                failures += 1
                described = dberrors.describe(exc) if dberrors.is_database_error(exc) else str(exc)
                log.warning(
                    "worker_lost_database",
                    error=secrets.redact(described or type(exc).__name__),
                    retry_in_s=pause,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
    finally:
        await engine.dispose()
    log.info("worker_stopped", worker=name)


async def _work(
    app: procrastinate.App,
    resources: WorkerResources,
    name: str,
    concurrency: int,
    grace_seconds: float,
) -> None:
    execution = resources.settings.execution
    guarded = GuardedWorker(
        app=app,
        aborts=resources.aborts,
        queues=[QUEUE],
        name=name,
        concurrency=concurrency,
        install_signal_handlers=False,  # `pipeline.shutdown` owns the signals
        shutdown_graceful_timeout=grace_seconds,
        update_heartbeat_interval=execution.heartbeat_seconds,
        # New jobs arrive by LISTEN/NOTIFY; a job put back (retried) is found by polling.
        fetch_job_polling_interval=min(5.0, execution.heartbeat_seconds),
        stalled_worker_timeout=execution.stalled_after_seconds,
        additional_context={RESOURCES: resources},
    )
    worker = asyncio.create_task(guarded.run())
    rescuer = asyncio.create_task(
        retry_stalled_jobs(
            app, stalled_after=execution.stalled_after_seconds, every=execution.heartbeat_seconds
        )
    )
    stopping = asyncio.create_task(resources.stop.wait())
    try:
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not worker.done():
            worker.cancel()  # procrastinate stops taking jobs and waits `grace` for running ones
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        if not resources.stop.is_set():
            raise ConnectionError("the worker's loop ended: its database connection failed")
    finally:
        for task in (rescuer, stopping):
            task.cancel()
        await asyncio.gather(rescuer, stopping, return_exceptions=True)


__all__ = ["WorkerResources", "retry_stalled_jobs", "run_job", "serve"]
