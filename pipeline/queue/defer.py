"""Making jobs: for a command (`pipeline sync`, `backfill`) and for a schedule's firing.

A stream with a job already waiting is not queued twice (its queueing lock): the command
waits for that job instead, which does the same work. A schedule's firing defers its job once
whatever number of schedulers fire it: the job is keyed by the firing's timestamp
(procrastinate's periodic defers), so two schedulers, or one restarted, never double a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued

from pipeline.logs import get_logger
from pipeline.queue.app import TASK_NAME, StreamJob

log = get_logger(__name__)


@dataclass(frozen=True)
class Deferred:
    """A job a command waits for: its id and the run it records under."""

    job_id: int
    job: StreamJob
    joined: bool = False  # an already waiting job of the stream, not a new one


def _task(app: procrastinate.App, job: StreamJob) -> procrastinate.jobs.JobDeferrer:
    return app.configure_task(
        TASK_NAME, allow_unknown=False, lock=job.lock, queueing_lock=job.queueing_lock
    )


async def defer(app: procrastinate.App, job: StreamJob) -> Deferred:
    """Queue `job`, or join the job of the same stream and kind that is already waiting."""
    try:
        job_id = await _task(app, job).defer_async(**job.args())
    except AlreadyEnqueued:
        waiting = await _waiting_job(app, job)
        if waiting is None:  # it started meanwhile: the queueing lock is free again
            return await defer(app, job)
        log.info("job_already_waiting", stream=job.stream, job_id=waiting.job_id)
        return waiting
    log.info("job_deferred", stream=job.stream, kind=job.kind, job_id=job_id, run_id=job.run_id)
    return Deferred(job_id, job)


async def _waiting_job(app: procrastinate.App, job: StreamJob) -> Deferred | None:
    for found in await app.job_manager.list_jobs_async(
        queueing_lock=job.queueing_lock, status="todo"
    ):
        if found.id is not None and found.task_name == TASK_NAME:
            args = {k: v for k, v in found.task_kwargs.items() if k != "timestamp"}
            return Deferred(found.id, StreamJob(**args), joined=True)  # type: ignore[arg-type]
    return None


async def defer_firing(
    app: procrastinate.App, job: StreamJob, schedule_id: str, fired_at: datetime
) -> int | None:
    """Queue the job of one firing of a schedule; None when it was queued already (by another
    scheduler, or before a restart) or one is still waiting."""
    timestamp = int(fired_at.timestamp())
    planned = _task(app, job).make_new_job(**job.args(), timestamp=timestamp)
    try:
        job_id = await app.job_manager.defer_periodic_job(
            planned, periodic_id=schedule_id, defer_timestamp=timestamp
        )
    except AlreadyEnqueued:
        log.info("job_already_waiting", stream=job.stream, kind=job.kind, schedule=schedule_id)
        return None
    if job_id is None:
        log.info(
            "firing_already_deferred", stream=job.stream, kind=job.kind, at=fired_at.isoformat()
        )
    else:
        log.info("job_deferred", stream=job.stream, kind=job.kind, job_id=job_id, run_id=job.run_id)
    return job_id


__all__ = ["Deferred", "defer", "defer_firing"]
