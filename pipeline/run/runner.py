"""Runs a set of streams once: one connection and one `StreamRun` per stream, concurrently.

Both the CLI and the scheduler call `Runner.run`. Each source gets one HTTP client for the run
(its limits shared with the process's other runs when given). A stream's failure is recorded
and reported; it never stops the other streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import dberrors, history, metrics
from pipeline.extract.http import HttpClient
from pipeline.extract.limits import LimitsBySource
from pipeline.logs import get_logger
from pipeline.run.slots import StreamSlots
from pipeline.run.strategies import strategy_for
from pipeline.run.stream_run import Mode, Progress, StreamOutcome, StreamRun
from pipeline.targets import StreamTarget, build_client

log = get_logger(__name__)


class Runner:
    """Runs a set of streams once. Resources come in; nothing global is created here.

    `stop`, once set, ends every stream at its next page boundary: the page being written
    commits, the run is recorded `interrupted`, and state stays consistent. `limits`: each
    source's concurrency cap and rate, shared with other runs of the process (the scheduler's);
    without it, this run's streams share limits of their own. `slots`: how many streams run at
    once, shared the same way (`pipeline.run.slots`); streams beyond it wait their turn."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        run_id: uuid.UUID | None = None,
        mode: Mode | None = None,
        stop: asyncio.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Progress | None = None,
        limits: LimitsBySource | None = None,
        slots: StreamSlots | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or LimitsBySource()
        self.slots = slots or StreamSlots()
        self.run_id = run_id or uuid.uuid4()
        self.mode = mode or Mode()
        self.stop = stop or asyncio.Event()
        self.clock = clock  # the run's start: caps watermarks, dates daily rows
        self.progress = progress

    async def run(self, targets: list[StreamTarget]) -> list[StreamOutcome]:
        return await self.run_each(targets, [self.mode])

    async def run_each(self, targets: list[StreamTarget], modes: list[Mode]) -> list[StreamOutcome]:
        """Every target in every mode (a backfill's slices), side by side within the slots, one
        HTTP client per source for all of them (one login, one session); outcomes mode by
        mode. Each mode after the first is a run of its own id."""
        runs = [
            (mode, self.run_id if i == 0 else uuid.uuid4(), target)
            for i, mode in enumerate(modes)
            for target in targets
        ]
        async with AsyncExitStack() as stack:
            clients: dict[str, HttpClient] = {}
            for target in targets:
                name = target.instance
                if name not in clients:
                    client = build_client(target.source, target.config, self.limits)
                    clients[name] = await stack.enter_async_context(client)
            results = await asyncio.gather(
                *(self._run_stream(t, clients[t.instance], m, r) for m, r, t in runs),
                return_exceptions=True,
            )
        outcomes = []
        for (mode, run_id, target), result in zip(runs, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                result = await self._not_started(target, result, mode, run_id)
            metrics.record_outcome(
                result,
                stream=target.key,
                source=target.instance,
                source_type=target.source.name,
                kind=mode.kind,
            )
            outcomes.append(result)
        return outcomes

    async def _not_started(
        self, target: StreamTarget, error: BaseException, mode: Mode, run_id: uuid.UUID
    ) -> StreamOutcome:
        """A stream that failed outside its own error handling (no database connection, say):
        its failure is recorded as any other, once the other streams have given their pooled
        connections back (so a full server still has one for it)."""
        if dberrors.is_database_error(error):
            text = f"{target.key}: could not start: {dberrors.describe(error)}"
        else:
            text = f"{target.key}: could not start: {type(error).__name__}: {error}"
        outcome = StreamOutcome(target.key, "failed", error=history.stored_error(text))
        log.error("stream_not_started", stream=target.key, error=outcome.error)
        try:
            async with self.engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                conn: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
                await history.not_run(
                    conn, run_id, target.key, mode.kind, "failed", outcome.error or text
                )
                await sa_conn.commit()
        except dberrors.DATABASE_ERRORS as exc:
            log.error("run_history_not_written", stream=target.key, error=str(exc))
        return outcome

    async def _run_stream(
        self, target: StreamTarget, client: HttpClient, mode: Mode, run_id: uuid.UUID
    ) -> StreamOutcome:
        with structlog.contextvars.bound_contextvars(
            run_id=str(run_id), source=target.instance, stream=target.stream.name
        ):
            async with self.slots.held():
                return await self._run_in_slot(target, client, mode, run_id)

    async def _run_in_slot(
        self, target: StreamTarget, client: HttpClient, mode: Mode, run_id: uuid.UUID
    ) -> StreamOutcome:
        started = time.monotonic()
        async with self.engine.connect() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            conn: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
            if self.stop.is_set():  # asked to stop while it waited for its turn
                return await self._stopped_before_start(conn, target, mode, run_id)
            run = StreamRun(
                target,
                client,
                conn,
                run_id=run_id,
                mode=mode,
                stop=self.stop,
                run_start=self.clock(),
                strategy=strategy_for(target.stream, mode),
                progress=self.progress,
            )
            outcome = await run.run()
        outcome.seconds = time.monotonic() - started
        log.info(
            "stream_finished",
            status=outcome.status,
            pages=outcome.pages,
            records=outcome.totals.read,
            inserted=outcome.totals.inserted,
            updated=outcome.totals.updated,
            unchanged=outcome.totals.unchanged,
            quarantined=outcome.totals.quarantined,
            deleted=outcome.deleted,
            held_deletes=outcome.held_deletes,
            duration_ms=round(outcome.seconds * 1000),
            error=outcome.error,
        )
        return outcome

    async def _stopped_before_start(
        self, conn: asyncpg.Connection, target: StreamTarget, mode: Mode, run_id: uuid.UUID
    ) -> StreamOutcome:
        error = f"{target.key}: stopped before its turn to run came (max_streams were running)"
        await history.not_run(conn, run_id, target.key, mode.kind, "interrupted", error)
        log.info("stream_not_started", reason=error)
        return StreamOutcome(target.key, "interrupted", error=error)
