"""`pipeline schedule`: run each enabled stream on its cron, until asked to stop.

APScheduler 3 (AsyncIOScheduler) fires the jobs; it holds no business logic. `coalesce` folds
missed firings into one, `max_instances=1` keeps one run per stream in this process, runs of one
source share its concurrency cap and request rate (`pipeline.extract.limits`), and the
stream's Postgres advisory lock (taken by the runner) keeps one run per stream across processes
and machines: a second replica skips the stream and logs it. Streams read by value (Valomnia)
also get a reconcile job, weekly unless configured, since only a reconcile sees their deletes.

With the queue backend (`[execution] backend = "queue"`) a firing runs nothing here: it queues
the stream's job for the workers (`pipeline.queue.defer.defer_firing`), once per firing however
many schedulers run, and not while the stream's previous job still waits.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.cron import cron_trigger, last_firing
from pipeline.extract.limits import LimitsBySource
from pipeline.logs import get_logger
from pipeline.run import Mode, Runner
from pipeline.run.slots import StreamSlots
from pipeline.streams import Incremental
from pipeline.targets import StreamTarget, select_streams

log = get_logger(__name__)

DEFAULT_RECONCILE_SCHEDULE = "0 4 * * 0"  # Sundays 04:00 UTC


def reconcile_schedule(target: StreamTarget) -> str | None:
    """When the stream's reconcile runs; None when its normal sync already sees deletions."""
    if target.settings.reconcile_schedule is not None:
        return target.settings.reconcile_schedule
    if target.stream.incremental is Incremental.SORTED_FILTER:
        return DEFAULT_RECONCILE_SCHEDULE
    return None


class StreamScheduler:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        stop: asyncio.Event,
        *,
        database_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop
        self.queued = settings.execution.backend == "queue"
        if self.queued and database_url is None:
            raise ValueError("the queue backend's scheduler needs the database URL")
        self.database_url = database_url
        self.running: set[asyncio.Task[object]] = set()
        # Jobs of one source firing together share its cap and rate, as one run's streams do,
        # and every job the process's stream slots (`max_streams` run at once, the rest wait).
        self.limits = LimitsBySource()
        self.slots = StreamSlots(settings.execution.max_streams)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )

    def plan(self) -> list[tuple[StreamTarget, Mode, str]]:
        jobs = []
        for target in select_streams(self.settings, []):
            jobs.append((target, Mode("sync"), target.settings.schedule))
            if (schedule := reconcile_schedule(target)) is not None:
                jobs.append((target, Mode("reconcile"), schedule))
        return jobs

    async def _defer(self, target: StreamTarget, mode: Mode, schedule: str) -> None:
        from pipeline.queue.app import StreamJob
        from pipeline.queue.defer import defer_firing

        if self.stop.is_set():
            return
        fired_at = last_firing(schedule, datetime.now(UTC))
        try:
            await defer_firing(
                self.app, StreamJob.new(target.key, mode), f"{target.key}:{mode.kind}", fired_at
            )
        except Exception:
            log.exception("job_not_deferred", stream=target.key, kind=mode.kind)

    async def _run(self, target: StreamTarget, mode: Mode) -> None:
        if self.stop.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            runner = Runner(
                self.engine, mode=mode, stop=self.stop, limits=self.limits, slots=self.slots
            )
            [outcome] = await runner.run([target])
            log.info(
                "scheduled_run_finished",
                stream=target.key,
                kind=mode.kind,
                status=outcome.status,
                records=outcome.totals.read,
            )
        except Exception:
            log.exception("scheduled_run_crashed", stream=target.key, kind=mode.kind)
        finally:
            self.running.discard(task)

    async def serve(self, grace_seconds: float = 30.0) -> None:
        """Run until `stop` is set, then let running streams end at a page boundary."""
        if self.queued:
            from pipeline.queue.app import queue_app

            assert self.database_url is not None
            self.app = queue_app(self.database_url, pool_size=2)
            async with self.app.open_async():
                await self._serve(grace_seconds)
        else:
            await self._serve(grace_seconds)

    async def _serve(self, grace_seconds: float) -> None:
        for target, mode, schedule in self.plan():
            self.scheduler.add_job(
                self._defer if self.queued else self._run,
                trigger=cron_trigger(schedule),
                args=[target, mode, schedule] if self.queued else [target, mode],
                id=f"{target.key}:{mode.kind}",
                name=f"{mode.kind} {target.key}",
            )
        self.scheduler.start()
        for job in self.scheduler.get_jobs():
            if job.next_run_time is None:  # validation refuses such schedules; never fatal here
                log.error("job_never_fires", job=job.id, reason="its cron matches no date")
                job.remove()
                continue
            log.info("job_scheduled", job=job.id, next_run=job.next_run_time.isoformat())
        if not self.scheduler.get_jobs():
            log.warning("nothing_to_schedule", reason="no enabled stream in the configuration")
        await self.stop.wait()
        # No new firings, but the running jobs go on to their page boundary: APScheduler's
        # shutdown cancels the coroutines it runs, so it comes only after they have ended.
        self.scheduler.pause()
        if self.running:
            log.info("waiting_for_running_streams", count=len(self.running))
            _, pending = await asyncio.wait(set(self.running), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        log.info("scheduler_stopped")
