"""A run of one stream: its lock, its history row, its strategy. The unit a worker executes.

The stream's advisory lock is held from before its `sync_runs` row is written until after its
end is, so one run of a stream happens at a time across processes and machines, and a row
left `running` whose lock nobody holds belongs to a run that died (`pipeline.history`). The
strategy (`pipeline.run.strategies`) reads the source and hands batches to `load`, which
writes each with the `Commit` that says what commits with it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from pipeline import dberrors, history, statekeys
from pipeline.counts import PageResult
from pipeline.errors import Interrupted, PipelineError
from pipeline.extract.http import HttpClient
from pipeline.extract.paginators import Fetch, Paginator
from pipeline.load import Batch, Commit, TableWriter
from pipeline.load.guard import DeletionGuard, Settled
from pipeline.locks import TRY_LOCK, TRY_LOCK_SHARED, UNLOCK, UNLOCK_SHARED, lock_name
from pipeline.logs import get_logger
from pipeline.rederive import BATCH_ROWS
from pipeline.run.fetch import list_fetch
from pipeline.run.guards import RunGuards
from pipeline.state import StreamState, read_state
from pipeline.streams import Stream
from pipeline.targets import StreamTarget

log = get_logger(__name__)

# How stale a running scan's counts in `sync_runs` may get while its batches write nothing.
HISTORY_EVERY_SECONDS = 1.0


@dataclass
class StreamOutcome:
    key: str
    status: str  # succeeded | failed | skipped | interrupted | held
    totals: PageResult = field(default_factory=PageResult)
    pages: int = 0
    deleted: int = 0
    # Rows it would have marked deleted beyond the stream's `max_delete_fraction`: not applied.
    held_deletes: int = 0
    seconds: float = 0.0
    watermark: datetime | None = None
    error: str | None = None
    # Failed because the database went away (restart, failover): the same run would succeed
    # once it answers, so a queue retries it (`pipeline.queue`); a source's errors are not.
    database_lost: bool = False


@dataclass(frozen=True)
class Mode:
    """What a run does: a normal `sync`, a `backfill` of a window, a `reconcile`, or a
    `rederive` (stored rows retyped from their `data`, no API call: `pipeline.rederive`)."""

    kind: str = "sync"
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    batch_rows: int = BATCH_ROWS  # rows per transaction of a `rederive`
    # One window of a backfill split in several (`backfill --slices`): its checkpoint and lock
    # are the window's, and it shares the stream's lock with the other slices.
    sliced: bool = False
    # `reconcile --confirm-deletes`: what it confirms deleted is applied, however many
    # (`pipeline.load.guard`).
    confirm_deletes: bool = False

    @property
    def window(self) -> str:
        return f"{self.since.isoformat() if self.since else ''}..{self.until.isoformat() if self.until else ''}"


Progress = Callable[[str, Batch, PageResult], None]
# A way of reading a stream (`pipeline.run.strategies`): its run, its table's writer, its state.
Strategy = Callable[["StreamRun", TableWriter, StreamState], Awaitable[None]]


class StreamRun:
    """One stream, one run, read by `strategy`. What strategies use: the target, the client,
    the connection, the mode, `writer`, `lists`, `load` and `commit`."""

    def __init__(
        self,
        target: StreamTarget,
        client: HttpClient,
        conn: asyncpg.Connection,
        *,
        run_id: uuid.UUID,
        mode: Mode,
        stop: asyncio.Event,
        run_start: datetime,
        strategy: Strategy,
        progress: Progress | None = None,
    ) -> None:
        self.target = target
        self.stream = target.stream
        self.key = target.key
        self.client = client
        self.conn = conn
        self.run_id = run_id
        self.mode = mode
        self.stop = stop
        self.run_start = run_start  # caps watermarks, dates daily rows
        self.progress = progress
        self.strategy = strategy
        self.guards = RunGuards.of(target)  # max_pages, max_run_seconds
        self.outcome = StreamOutcome(self.key, "running")
        self.history_row: int | None = None
        # Counts of quiet batches not yet added to the run's history row (see `load`).
        self._unrecorded = PageResult()
        self._unrecorded_pages = 0
        self._recorded_at = time.monotonic()
        # What derived columns may use besides the record (e.g. one statistics row per day).
        self.context = {"run_date": run_start.date()}

    def _locks(self) -> list[tuple[str, str, str]]:
        """(take, release, name) of each advisory lock the run holds: its stream's alone; a
        backfill slice shares its stream's with the other slices and holds its window's."""
        name = lock_name(self.key)
        if not self.mode.sliced:
            return [(TRY_LOCK, UNLOCK, name)]
        return [
            (TRY_LOCK_SHARED, UNLOCK_SHARED, name),
            (TRY_LOCK, UNLOCK, lock_name(str(statekeys.backfill(self.key, self.mode.window)))),
        ]

    async def run(self) -> StreamOutcome:
        held: list[tuple[str, str]] = []
        try:
            for take, release, name in self._locks():
                if not await self.conn.fetchval(take, name):
                    await self._skipped(name)
                    return self.outcome
                held.append((release, name))
            await self._run_locked()
        finally:
            for release, name in reversed(held):
                try:
                    await self.conn.execute(release, name)
                except dberrors.DATABASE_ERRORS:
                    pass  # a broken connection has released the lock already
        return self.outcome

    async def _skipped(self, lock: str) -> None:
        """Another session holds the lock: the run does not happen, and its row says who."""
        reason = f"{self.key}: " + await history.why_locked(self.conn, self.key, lock)
        log.warning("stream_locked_skipping", reason=reason)
        state = await read_state(self.conn, self.key)
        await history.not_run(
            self.conn, self.run_id, self.key, self.mode.kind, "skipped", reason, state.watermark
        )
        self.outcome.status = "skipped"
        self.outcome.watermark = state.watermark
        self.outcome.error = history.stored_error(reason)

    async def _run_locked(self) -> None:
        if not self.mode.sliced:  # alone on the stream: a `running` row is abandoned
            await history.close_abandoned(self.conn, self.key)
        state = await read_state(self.conn, self.key)
        self.outcome.watermark = state.watermark
        self.history_row = await history.begin(
            self.conn, self.run_id, self.key, self.mode.kind, state.watermark
        )
        log.info(
            "stream_started", watermark=state.watermark.isoformat() if state.watermark else None
        )
        status, error = "failed", None
        try:
            writer = await self.writer(self.stream, rewrite=self.mode.kind == "backfill")
            await self.guards.timed(self.strategy(self, writer, state))
            status = "succeeded"
            if self.outcome.held_deletes:
                status, error = "held", self._held_message()
        except asyncio.CancelledError:
            status, error = "interrupted", "stopped before the run finished"
            raise
        except Interrupted:
            status, error = "interrupted", "stopped at a page boundary when asked to stop"
        except PipelineError as exc:  # HTTP, paging and the like: already a sentence
            error = f"{self.key}: {exc}"
        except dberrors.DATABASE_ERRORS as exc:  # a lost connection too: not ours to report
            error = f"{self.key}: {dberrors.describe(exc)}"
            self.outcome.database_lost = True
        except Exception as exc:
            log.exception("stream_crashed")
            error = f"{self.key}: internal error {type(exc).__name__}: {exc}; please report it"
        finally:
            self.outcome.status = status
            self.outcome.error = history.stored_error(error)
            if status == "held":
                log.warning("stream_held_deletions", error=self.outcome.error)
            elif error:
                log.error("stream_failed", error=self.outcome.error)
            await asyncio.shield(self._finish(status))

    def _held_message(self) -> str:
        fraction = self.target.settings.max_delete_fraction
        return (
            f"{self.key}: {self.outcome.held_deletes} rows would have been marked deleted in "
            f"one run, more than max_delete_fraction ({fraction:g}) of the live rows they were "
            "among; nothing was deleted (the rows read were loaded). Check the source (an "
            "outage, a narrowed permission or filter); if the deletions are real, run "
            f"`pipeline reconcile {self.key} --confirm-deletes`"
        )

    async def _finish(self, status: str) -> None:
        if self.history_row is None:
            return
        try:
            if self._unrecorded_pages:
                await history.add_page(
                    self.conn, self.history_row, self._unrecorded, pages=self._unrecorded_pages
                )
            await history.finish(
                self.conn,
                self.history_row,
                status,
                watermark_after=self.outcome.watermark,
                deleted=self.outcome.deleted,
                error=self.outcome.error,
                held_deletes=self.outcome.held_deletes,
            )
        except dberrors.DATABASE_ERRORS as exc:
            log.error("run_history_not_written", error=str(exc))

    # ---- what strategies use ---------------------------------------------------------------

    async def writer(self, stream: Stream, *, rewrite: bool = False) -> TableWriter:
        """A writer for one of the run's tables, set up on the run's connection; indexes a
        crashed first load put off are built first (`pipeline.load.indexes`)."""
        fraction = self.target.settings.max_delete_fraction
        writer = TableWriter(
            self.conn,
            self.target.source,
            stream,
            self.run_id,
            self.context,
            rewrite=rewrite,
            instance=self.target.instance,
            guard=DeletionGuard(None if self.mode.confirm_deletes else fraction),
        )
        await writer.set_up()
        await writer.finish_load()
        return writer

    def lists(
        self,
        stream: Stream,
        path: str,
        parent: str | None = None,
        paginator_factory: Callable[[int], Paginator] | None = None,
    ) -> tuple[Paginator, Fetch]:
        """A fresh paginator for one list of `stream` and the fetch it walks with (its pages
        counted against the run's `max_pages`)."""
        paginator, fetch = list_fetch(
            self.client, self.target, stream, path, parent, paginator_factory
        )
        return paginator, self.guards.counting(fetch)

    def commit(
        self,
        *,
        watermark: datetime | None = None,
        checkpoint: tuple[str, dict[str, Any] | None] | None = None,
    ) -> Commit:
        """State that commits with rows: the stream's watermark, a checkpoint."""
        return Commit(
            self.run_id,
            watermark=None if watermark is None else (self.key, watermark),
            checkpoint=checkpoint,
        )

    def settled(self, settled: Settled) -> None:
        """A scan's settling: its deletions, and those the guard held back."""
        self.outcome.deleted += settled.deleted
        self.outcome.held_deletes += settled.held

    def advanced(self, watermark: datetime | None) -> None:
        if watermark is not None:
            self.outcome.watermark = max(filter(None, (self.outcome.watermark, watermark)))

    async def load(
        self,
        writer: TableWriter,
        batch: Batch,
        commit: Commit | None = None,
        quiet: bool | None = None,
    ) -> PageResult:
        """Write one batch with `commit` plus the run's counts, in one transaction. A batch
        found unchanged in memory that commits nothing needs no database at all: its counts
        join the next batch that writes (or are written within `HISTORY_EVERY_SECONDS`).
        `quiet`: the caller's `quiet` answer for this batch, when it decided on it."""
        if self.stop.is_set():
            raise Interrupted("asked to stop")
        started = time.monotonic()
        if quiet if quiet is not None else self.quiet(batch, commit):
            result = await writer.write(batch.prepared)
            self._unrecorded.add(result)
            self._unrecorded_pages += len(batch.numbers)
        else:
            base = commit or Commit(self.run_id)
            recorded = Commit(
                self.run_id,
                history_row=self.history_row,
                pages=len(batch.numbers) + self._unrecorded_pages,
                counted_before=self._unrecorded,
                watermark=base.watermark,
                checkpoint=base.checkpoint,
            )
            self._unrecorded, self._unrecorded_pages = PageResult(), 0
            try:
                result = await writer.write(batch.prepared, recorded)
            except BaseException:
                self._unrecorded.add(recorded.counted_before)
                self._unrecorded_pages += recorded.pages - len(batch.numbers)
                raise
            self._recorded_at = time.monotonic()
            if commit is not None and commit.watermark is not None:
                self.advanced(commit.watermark[1])
        self.outcome.totals.add(result)
        self.outcome.pages += len(batch.numbers)
        if self.progress is not None:
            self.progress(self.key, batch, result)
        log.info(
            "page_loaded",
            table=writer.stream.name,
            page=batch.number,
            records=result.read,
            inserted=result.inserted,
            updated=result.updated,
            quarantined=result.quarantined,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return result

    def quiet(self, batch: Batch, commit: Commit | None) -> bool:
        """Whether loading the batch needs no database at all (see `load`)."""
        return (
            batch.prepared.settled
            and commit is None
            and time.monotonic() - self._recorded_at < HISTORY_EVERY_SECONDS
        )


__all__ = ["Mode", "Strategy", "StreamOutcome", "StreamRun"]
