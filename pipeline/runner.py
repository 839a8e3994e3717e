"""Runs streams: one lock, one connection and one `sync_runs` row per stream; streams concurrent.

Both the CLI and the scheduler call `Runner.run`. Within a stream, fetching overlaps loading:
a producer walks the paginator into a small queue while the loader writes pages, each in its
own transaction. A stream's failure is recorded and reported; it never stops the other streams.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import quote

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import dberrors, history
from pipeline.errors import Interrupted, NotFound, PipelineError, SourceHttpError
from pipeline.held import HeldWrites
from pipeline.http import HttpClient, JsonResponse
from pipeline.limits import LimitsBySource
from pipeline.load import Checkpoint, PageResult, PreparedPage, TableWriter
from pipeline.logs import get_logger, secrets
from pipeline.paginators import Page, Paginator, merge, records_at
from pipeline.rawjson import loads_keeping_records, loads_parsing_records, parse_record
from pipeline.rederive import BATCH_ROWS, Rederivation
from pipeline.state import advance_watermark, read_state, save_checkpoint
from pipeline.streams import Deletions, Incremental, Partitions, Stream, dig
from pipeline.targets import StreamTarget, build_client

log = get_logger(__name__)

# Detail-endpoint probes per run for delete candidates; beyond it, the two-scan rule decides.
MAX_DELETE_PROBES = 1000
# Records fetched ahead of the loader at most (counted in records, not pages: a page holds 25
# records or 1,000): enough to fill the next batches while one is being written.
AHEAD_RECORDS = 12000
# Records per load transaction at most, when pages wait in the queue. A first load of 200,000
# shipments took 4.5 s in batches of 2,000 with 4,000 ahead and 4.1 s in batches of 4,000 with
# 12,000 ahead (`bench/`): fewer transactions, and Python keeps further ahead of Postgres.
BATCH_RECORDS = 4000
# A re-run's few writes are held until this many wait (`pipeline.held`).
HELD_RECORDS = 1000
# How stale a running scan's counts in `sync_runs` may get while its batches write nothing.
HISTORY_EVERY_SECONDS = 1.0


@dataclass
class StreamOutcome:
    key: str
    status: str  # succeeded | failed | skipped | interrupted
    totals: PageResult = field(default_factory=PageResult)
    pages: int = 0
    deleted: int = 0
    seconds: float = 0.0
    watermark: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Mode:
    """What a run does: a normal `sync`, a `backfill` of a window, a `reconcile`, or a
    `rederive` (stored rows retyped from their `data`, no API call: `pipeline.rederive`)."""

    kind: str = "sync"
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    batch_rows: int = BATCH_ROWS  # rows per transaction of a `rederive`


class Runner:
    """Runs a set of streams once. Resources come in; nothing global is created here.

    `stop`, once set, ends every stream at its next page boundary: the page being written
    commits, the run is recorded `interrupted`, and state stays consistent. `limits`: each
    source's concurrency cap and rate, shared with other runs of the process (the scheduler's);
    without it, this run's streams share limits of their own."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        run_id: uuid.UUID | None = None,
        mode: Mode = Mode(),
        stop: asyncio.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        progress: Callable[[str, Page, PageResult], None] | None = None,
        limits: LimitsBySource | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or LimitsBySource()
        self.run_id = run_id or uuid.uuid4()
        self.mode = mode
        self.kind = mode.kind
        self.stop = stop or asyncio.Event()
        self.clock = clock  # the run's start: caps watermarks, dates daily rows
        self.progress = progress

    async def run(self, targets: list[StreamTarget]) -> list[StreamOutcome]:
        async with AsyncExitStack() as stack:
            clients: dict[str, HttpClient] = {}
            for target in targets:
                name = target.source.name
                if name not in clients:
                    client = build_client(target.source, target.config, self.limits)
                    clients[name] = await stack.enter_async_context(client)
            results = await asyncio.gather(
                *(self._run_stream(t, clients[t.source.name]) for t in targets),
                return_exceptions=True,
            )
        outcomes = []
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                # Outside the stream's own error handling (no database connection, say).
                log.error("stream_not_started", stream=target.key, error=str(result))
                if dberrors.is_database_error(result):
                    error = f"{target.key}: {dberrors.describe(result)}"
                else:
                    error = f"{target.key}: {type(result).__name__}: {result}"
                result = StreamOutcome(target.key, "failed", error=secrets.redact(error))
            outcomes.append(result)
        return outcomes

    async def _run_stream(self, target: StreamTarget, client: HttpClient) -> StreamOutcome:
        with structlog.contextvars.bound_contextvars(
            run_id=str(self.run_id), source=target.source.name, stream=target.stream.name
        ):
            started = time.monotonic()
            async with self.engine.connect() as sa_conn:
                raw = await sa_conn.get_raw_connection()
                conn: asyncpg.Connection = raw.driver_connection  # type: ignore[assignment]
                outcome = await _StreamRun(self, target, client, conn).run()
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
                duration_ms=round(outcome.seconds * 1000),
                error=outcome.error,
            )
            return outcome


class _StreamRun:
    """One stream, one run: lock, history row, extract + load, finish."""

    def __init__(
        self, runner: Runner, target: StreamTarget, client: HttpClient, conn: asyncpg.Connection
    ) -> None:
        self.runner = runner
        self.target = target
        self.stream = target.stream
        self.key = target.key
        self.client = client
        self.conn = conn
        self.run_id = runner.run_id
        self.outcome = StreamOutcome(self.key, "running")
        self.row_id: int | None = None
        # Counters of quiet batches not yet added to the run's history row (see `_load`).
        self._unrecorded = PageResult()
        self._unrecorded_pages = 0
        self._recorded_at = time.monotonic()
        self.run_start = runner.clock()
        # What derived columns may use besides the record (e.g. one statistics row per day).
        self.context = {"run_date": self.run_start.date()}

    async def run(self) -> StreamOutcome:
        lock_name = f"pipeline.stream:{self.key}"
        locked = await self.conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", lock_name
        )
        if not locked:
            log.warning(
                "stream_locked_skipping", reason="another run of this stream is in progress"
            )
            self.outcome.status = "skipped"
            self.outcome.error = "another run of this stream holds its lock; skipped"
            return self.outcome
        try:
            await self._run_locked()
        finally:
            try:
                await self.conn.execute(
                    "SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock_name
                )
            except dberrors.DATABASE_ERRORS:
                pass  # a broken connection has released the lock already
        return self.outcome

    async def _run_locked(self) -> None:
        await history.close_abandoned(self.conn, self.key)
        state = await read_state(self.conn, self.key)
        self.outcome.watermark = state.watermark
        self.row_id = await history.begin(
            self.conn, self.run_id, self.key, self.runner.kind, state.watermark
        )
        log.info(
            "stream_started", watermark=state.watermark.isoformat() if state.watermark else None
        )
        kind = self.runner.mode.kind
        writer = TableWriter(
            self.conn,
            self.target.source,
            self.stream,
            self.run_id,
            self.context,
            rewrite=kind == "backfill",  # a backfill repairs rows, changed at the source or not
        )
        status, error = "failed", None
        try:
            await writer.prepare()
            await writer.finish_load()  # indexes a crashed first load put off (`indexes`)
            if kind == "backfill":
                await self._backfill(writer)
            elif kind == "rederive":
                await self._rederive()
            elif kind == "reconcile" and self.stream.incremental is Incremental.SORTED_FILTER:
                await self._reconcile_sorted(writer)
            elif self.stream.partitions is not None:
                await self._partitioned(writer, state.checkpoint)
            elif self.stream.incremental is Incremental.FULL_SCAN:
                await self._full_scan(writer)  # also what a reconcile of a full scan is
            else:
                await self._sorted_filter(writer, state.watermark)
            status = "succeeded"
        except asyncio.CancelledError:
            status, error = "interrupted", "stopped before the run finished"
            raise
        except Interrupted:
            status, error = "interrupted", "stopped at a page boundary when asked to stop"
        except PipelineError as exc:  # HTTP, paging and the like: already a sentence
            error = f"{self.key}: {exc}"
        except dberrors.DATABASE_ERRORS as exc:  # a lost connection too: not ours to report
            error = f"{self.key}: {dberrors.describe(exc)}"
        except Exception as exc:
            log.exception("stream_crashed")
            error = f"{self.key}: internal error {type(exc).__name__}: {exc}; please report it"
        finally:
            self.outcome.status = status
            self.outcome.error = secrets.redact(error) if error else None
            if error:
                log.error("stream_failed", error=self.outcome.error)
            await asyncio.shield(self._finish(status))

    async def _finish(self, status: str) -> None:
        if self.row_id is None:
            return
        try:
            if self._unrecorded_pages:
                await history.add_page(
                    self.conn, self.row_id, self._unrecorded, pages=self._unrecorded_pages
                )
            await history.finish(
                self.conn,
                self.row_id,
                status,
                watermark_after=self.outcome.watermark,
                deleted=self.outcome.deleted,
                error=self.outcome.error,
            )
        except dberrors.DATABASE_ERRORS as exc:
            log.error("run_history_not_written", error=str(exc))

    # ---- strategies ------------------------------------------------------------------------

    def _paginator_and_fetch(
        self,
        stream: Stream,
        path: str,
        parent: str | None = None,
        paginator_factory: Callable[[int], Paginator] | None = None,
    ) -> tuple[Any, Any]:
        size = stream.page_size(self.target.settings)
        paginator = (paginator_factory or stream.paginator)(size)
        filters = self.target.filter_params
        keep = _records_stay_raw(stream, size)
        parse = partial(
            loads_keeping_records if keep else loads_parsing_records,
            records_path=paginator.records_path,
        )
        form = None
        if stream.form is not None:
            form = {name: value.format(parent=parent) for name, value in stream.form.items()}

        async def fetch(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
            return await self.client.request(
                stream.method,
                path,
                params={**filters, **params},
                headers=headers,
                form=form,
                multipart=stream.multipart,
                expect=paginator.check,
                parse=parse,
            )

        return paginator, fetch

    async def _load(
        self,
        writer: TableWriter,
        page: Page,
        checkpoint_at: datetime | None,
        also: Checkpoint | None = None,
        quiet: bool | None = None,
    ) -> PageResult:
        """`quiet`: the caller's `_quiet` answer for this batch, when it decided on it."""
        if self.runner.stop.is_set():
            raise Interrupted("asked to stop")
        started = time.monotonic()
        row_id = self.row_id
        assert row_id is not None

        # Counts of quiet batches go into this batch's history row; taken now, so batches that
        # come while it is written (see `_scan`) are kept for the next.
        unrecorded, unrecorded_pages = PageResult(), 0

        async def checkpoint(conn: asyncpg.Connection, result: PageResult) -> None:
            counted = PageResult()
            counted.add(unrecorded)
            counted.add(result)
            pages = len(page.numbers) + unrecorded_pages
            await history.add_page(conn, row_id, counted, pages=pages)
            if checkpoint_at is not None:
                await advance_watermark(conn, self.key, checkpoint_at, self.run_id)
            if also is not None:
                await also(conn, result)

        prepared = page.prepared if page.prepared is not None else page.records
        if quiet if quiet is not None else self._quiet(page, checkpoint_at, also):
            # A batch found unchanged in memory moves no state: no transaction, and its counts
            # join the history row with the next batch that writes (or within a second).
            result = await writer.write_page(prepared)
            self._unrecorded.add(result)
            self._unrecorded_pages += len(page.numbers)
        else:
            unrecorded, unrecorded_pages = self._unrecorded, self._unrecorded_pages
            self._unrecorded, self._unrecorded_pages = PageResult(), 0
            try:
                result = await writer.write_page(prepared, checkpoint)
            except BaseException:
                self._unrecorded.add(unrecorded)
                self._unrecorded_pages += unrecorded_pages
                raise
            self._recorded_at = time.monotonic()
        self.outcome.totals.add(result)
        self.outcome.pages += len(page.numbers)
        if self.runner.progress is not None:
            self.runner.progress(self.key, page, result)
        if checkpoint_at is not None:
            self.outcome.watermark = max(filter(None, (self.outcome.watermark, checkpoint_at)))
        log.info(
            "page_loaded",
            table=writer.stream.name,
            page=page.number,
            records=result.read,
            inserted=result.inserted,
            updated=result.updated,
            quarantined=result.quarantined,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return result

    def _quiet(self, page: Page, checkpoint_at: datetime | None, also: Checkpoint | None) -> bool:
        """Whether loading the batch needs no database at all (see `_load`)."""
        return (
            _settled(page)
            and checkpoint_at is None
            and also is None
            and time.monotonic() - self._recorded_at < HISTORY_EVERY_SECONDS
        )

    async def _scan(
        self, writer: TableWriter, stream: Stream, path: str, parent: str | None = None
    ) -> PageResult:
        """Read every page of one list into the writer's table; return what it read.

        Held writes (`pipeline.held`) are written in the background while the scan reads on:
        the pages in between are found unchanged in memory and need no connection. Anything
        that needs the connection waits for that write first, so writes keep their order."""
        paginator, fetch = self._paginator_and_fetch(stream, path, parent)
        early = _PreparedOnArrival(fetch, paginator.records_path, writer.prepare_page)
        pages = paginator.pages(early.fetch, start=None, concurrency=self.client.max_concurrency)
        totals = PageResult()
        held = HeldWrites(writer, HELD_RECORDS, HISTORY_EVERY_SECONDS)
        writing: asyncio.Task[PageResult] | None = None

        async def written() -> None:
            nonlocal writing
            if writing is not None:
                task, writing = writing, None
                totals.add(await task)

        try:
            async for page in overlapped(pages, early.prepare):
                if held.take(page):
                    if held.due():
                        await written()
                        writing = asyncio.create_task(self._load(writer, held.release(), None))
                    continue
                quiet = self._quiet(page, None, None)
                if not quiet:
                    await written()
                    if held:  # writes keep their order
                        totals.add(await self._load(writer, held.release(), None))
                totals.add(await self._load(writer, page, None, quiet=quiet))
            await written()
            if held:
                totals.add(await self._load(writer, held.release(), None))
            await writer.finish_load()
        finally:
            if writing is not None:
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
        return totals

    async def _settle_absences(
        self, writer: TableWriter, stream: Stream, also: Checkpoint | None = None
    ) -> int:
        """After a complete scan: probe and mark deletions, plus `also`, in one transaction."""
        judged = stream.deletions is not Deletions.NEVER
        gone = await self._probe_absent(writer, stream) if judged else []
        async with self.conn.transaction():
            deleted = await writer.record_absences(gone) if judged else 0
            if also is not None:
                await also(self.conn, PageResult())
        self.outcome.deleted += deleted
        return deleted

    async def _full_scan(self, writer: TableWriter) -> None:
        """Read every page; write what changed; after a complete scan, settle deletions and the
        watermark in one transaction."""
        await writer.start_scan(scope=self.target.filter_scope)
        totals = await self._scan(writer, self.stream, self.stream.path)
        watermark = min(totals.max_cursor, self.run_start) if totals.max_cursor else None

        async def commit_watermark(conn: asyncpg.Connection, _: PageResult) -> None:
            if watermark is not None:
                await advance_watermark(conn, self.key, watermark, self.run_id)

        await self._settle_absences(writer, self.stream, commit_watermark)
        if watermark is not None:
            self.outcome.watermark = max(filter(None, (self.outcome.watermark, watermark)))

    async def _partitioned(self, writer: TableWriter, checkpoint: dict[str, Any] | None) -> None:
        """Read the parent list, then each parent's children as one unit. Finished parents are
        recorded in the stream's checkpoint with the unit's last transaction, so a crash resumes
        at the next parent; the checkpoint is cleared when every parent is done.

        A parent that is not a stream of its own (Afosto price groups) is stored here; one that
        is (DigiLocker issuers) is only listed, its own stream keeps its table."""
        partitions = self.stream.partitions
        assert partitions is not None
        keys = await self._parent_keys(partitions)
        done = set((checkpoint or {}).get("done_partitions", []))
        if done:
            log.info("resuming_partitions", done=len(done & keys), total=len(keys))
        for key in sorted(keys - done):
            await writer.start_scan(partition=(partitions.column, key))
            path = self.stream.path.format(parent=_segment(key))
            try:
                await self._scan(writer, self.stream, path, parent=key)
            except NotFound:
                log.warning("partition_gone", partition=key, path=path)
                continue
            done.add(key)
            progress = {"done_partitions": sorted(done)}

            async def save_progress(
                conn: asyncpg.Connection, _: PageResult, p: dict[str, Any] = progress
            ) -> None:
                await save_checkpoint(conn, self.key, p, self.run_id)

            await self._settle_absences(writer, self.stream, save_progress)
        async with self.conn.transaction():
            if self.stream.deletions is Deletions.SNAPSHOT:
                self.outcome.deleted += await writer.retire_partitions(
                    partitions.column, sorted(keys)
                )
            await save_checkpoint(self.conn, self.key, None, self.run_id)
            if self.outcome.totals.max_cursor is not None:
                watermark = min(self.outcome.totals.max_cursor, self.run_start)
                await advance_watermark(self.conn, self.key, watermark, self.run_id)
                self.outcome.watermark = max(filter(None, (self.outcome.watermark, watermark)))

    async def _parent_keys(self, partitions: Partitions) -> set[str]:
        parent = partitions.parent
        stored_here = not any(s is parent for s in self.target.source.streams)
        parent_writer = None
        if stored_here:
            parent_writer = TableWriter(
                self.conn, self.target.source, parent, self.run_id, self.context
            )
            await parent_writer.prepare()
            await parent_writer.finish_load()  # as for the stream's own table (`_run_locked`)
            await parent_writer.start_scan()
        keys: set[str] = set()
        paginator, fetch = self._paginator_and_fetch(parent, parent.path)
        pages = paginator.pages(fetch, start=None, concurrency=self.client.max_concurrency)
        async for page in overlapped(pages):
            for element in page.records:
                try:
                    record = parse_record(element)
                except ValueError:
                    continue  # the parent's loader quarantines it
                record = dig(record, parent.record_path) if parent.record_path else record
                if isinstance(record, dict) and record.get(partitions.key) is not None:
                    keys.add(str(record[partitions.key]))
            if parent_writer is not None:
                await self._load(parent_writer, page, None)
        if parent_writer is not None:
            await parent_writer.finish_load()
            await self._settle_absences(parent_writer, parent)
        return keys

    async def _probe_absent(self, writer: TableWriter, stream: Stream) -> list[Any]:
        """Ask the detail endpoint about rows the scan did not see: 404 confirms a deletion,
        a record proves the row alive (page drift hid it) and is stored; anything else leaves
        the decision to the two-scan rule."""
        if not stream.detail_path:
            return []
        candidates = await writer.absent_keys(MAX_DELETE_PROBES)
        if not candidates:
            return []
        detail_path = stream.detail_path

        async def probe(key: Any) -> tuple[Any, Any]:
            try:
                response = await self.client.get(detail_path.format(id=_segment(key)))
            except NotFound:
                return key, None
            except SourceHttpError as exc:
                log.warning("delete_probe_inconclusive", key=str(key), error=str(exc))
                return key, ...
            return key, response.body

        results = await asyncio.gather(*(probe(k) for k in candidates))
        gone = [key for key, body in results if body is None]
        alive = [(key, body) for key, body in results if body is not None and body is not ...]
        if alive and stream.detail_matches_list:
            await self._load(writer, Page([body for _, body in alive], number=0), None)
        elif alive:
            await writer.mark_seen([key for key, _ in alive])
        log.info(
            "delete_candidates_probed",
            table=stream.name,
            candidates=len(candidates),
            gone=len(gone),
            alive=len(alive),
        )
        return gone

    async def _sorted_filter(self, writer: TableWriter, watermark: datetime | None) -> None:
        """Read from the watermark (minus lookback) in cursor order; commit the checkpoint with
        every page, never past the run's start (late commits at the source stay covered)."""
        start = None
        if watermark is not None:
            start = watermark - timedelta(seconds=self.target.settings.lookback_seconds)
        paginator, fetch = self._paginator_and_fetch(self.stream, self.stream.path)
        pages = paginator.pages(fetch, start=start, concurrency=self.client.max_concurrency)
        async for page in overlapped(pages, writer.prepare_page):
            checkpoint = min(page.checkpoint, self.run_start) if page.checkpoint else None
            await self._load(writer, page, checkpoint)

    async def _reconcile_sorted(self, writer: TableWriter) -> None:
        """List every record (not just what changed), reload what is missing or stale, and
        settle deletions; the incremental watermark stays where it is."""
        if self.stream.reconcile_paginator is None:
            raise PipelineError("this API cannot list every record, so it cannot be reconciled")
        await writer.start_scan(scope=self.target.filter_scope)
        paginator, fetch = self._paginator_and_fetch(
            self.stream, self.stream.path, paginator_factory=self.stream.reconcile_paginator
        )
        pages = paginator.pages(fetch, start=None, concurrency=self.client.max_concurrency)
        async for page in overlapped(pages, writer.prepare_page):
            await self._load(writer, page, None)
        await writer.finish_load()
        await self._settle_absences(writer, self.stream)

    async def _backfill(self, writer: TableWriter) -> None:
        """Re-read a window of the cursor and upsert it; the watermark never moves. Progress is
        its own checkpoint (stream key + "#backfill"), so a crashed backfill resumes."""
        mode = self.runner.mode
        cursor = self.stream.cursor
        if cursor is None or self.stream.partitions is not None:
            raise PipelineError(
                "this stream has no change time to choose a window by; "
                f"`pipeline sync {self.stream.name}` reloads it in full"
            )
        assert mode.since is not None
        state_key = f"{self.key}#backfill"
        window = {
            "since": mode.since.isoformat(),
            "until": mode.until.isoformat() if mode.until else None,
        }
        saved = (await read_state(self.conn, state_key)).checkpoint or {}
        resume = saved if saved.get("window") == window else {}
        if resume:
            log.info("backfill_resuming", checkpoint=resume)
        sorted_by_cursor = self.stream.incremental is Incremental.SORTED_FILTER
        position = resume.get("position")
        done_pages: set[int] = set(resume.get("done_pages", []))
        paginator, fetch = self._paginator_and_fetch(self.stream, self.stream.path)
        pages = paginator.pages(
            fetch,
            start=datetime.fromisoformat(position) if position else mode.since,
            end=mode.until,
            skip=frozenset() if sorted_by_cursor else frozenset(done_pages),
            concurrency=self.client.max_concurrency,
        )

        def in_window(element: Any) -> bool:
            try:
                record = parse_record(element)
                if self.stream.record_path:
                    record = dig(record, self.stream.record_path)
                value = cursor.value(record) if isinstance(record, dict) else None
            except ValueError:
                return True  # the loader quarantines it, with its reason
            if value is None:
                return True
            return value >= mode.since and (mode.until is None or value <= mode.until)

        async for page in overlapped(pages):
            chosen = (
                page
                if sorted_by_cursor
                else Page(
                    [r for r in page.records if in_window(r)], page.number, merged=page.numbers
                )
            )
            if mode.dry_run:
                self.outcome.pages += len(page.numbers)
                self.outcome.totals.read += len(chosen.records)
                if self.runner.progress is not None:
                    self.runner.progress(self.key, chosen, PageResult(read=len(chosen.records)))
                continue
            done_pages.update(page.numbers)
            progress: dict[str, Any] = {"window": window}
            if sorted_by_cursor and page.checkpoint is not None:
                progress["position"] = page.checkpoint.isoformat()
            else:
                progress["done_pages"] = sorted(done_pages)

            async def save_progress(
                conn: asyncpg.Connection, _: PageResult, p: dict[str, Any] = progress
            ) -> None:
                await save_checkpoint(conn, state_key, p, self.run_id)

            await self._load(writer, chosen, None, also=save_progress)
        if not mode.dry_run:
            await self.conn.execute(
                "DELETE FROM pipeline.stream_state WHERE stream = $1", state_key
            )

    async def _rederive(self) -> None:
        """Retype the stored rows from their `data`; each batch's counts go into the run's
        history row in the batch's own transaction."""
        row_id, mode = self.row_id, self.runner.mode
        assert row_id is not None

        async def in_batch(conn: asyncpg.Connection, result: PageResult) -> None:
            await history.add_page(conn, row_id, result)

        def committed(result: PageResult) -> None:
            self.outcome.totals.add(result)
            self.outcome.pages += 1
            if self.runner.progress is not None:
                self.runner.progress(self.key, Page([], self.outcome.pages), result)

        rederivation = Rederivation(
            self.conn,
            self.target,
            self.run_id,
            since=mode.since,
            until=mode.until,
            batch_rows=mode.batch_rows,
        )
        await rederivation.run(self.runner.stop, in_batch, committed)


def _records_stay_raw(stream: Stream, page_size: int) -> bool:
    """Whether a stream's records come as the bytes the API sent (`pipeline.rawjson`): when
    they are the list's elements themselves and no paginator the stream is read with looks
    inside them. Decided per stream, not per run, because the content hash is over those bytes
    and must be over the same bytes whichever way (sync, reconcile, backfill) a record came."""
    if stream.record_path:
        return False
    factories = (stream.paginator, stream.reconcile_paginator)
    return not any(f(page_size).sees_records for f in factories if f is not None)


def _segment(value: Any) -> str:
    """A value from an API response put into a URL path: quoted, so an id such as
    `../admin` or `a?b` stays one path segment of the declared endpoint."""
    return quote(str(value), safe="")


_DONE = object()


class _PreparedOnArrival:
    """Runs the writer's per-record work on a page's records the moment its body is parsed,
    before the paginator hands the page on.

    The records are then still in the CPU's caches: hashing a record parsed a moment ago took
    0.7 us, one parsed 40 pages earlier (the look-ahead) 1.6-2.3 us (`bench/`, 1 KB shipments).
    Pages the paginator does not build from the body's list are prepared when they come."""

    def __init__(
        self,
        fetch: Callable[..., Awaitable[JsonResponse]],
        records_path: tuple[str, ...],
        prepare: Callable[[list[Any]], PreparedPage],
    ) -> None:
        self._fetch = fetch
        self._path = records_path
        self._prepare = prepare
        self._done: dict[int, tuple[list[Any], PreparedPage]] = {}

    async def fetch(self, params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        response = await self._fetch(params, headers)
        try:
            records = records_at(response.body, self._path)
        except ValueError:
            return response  # not a list of records: the paginator says what is wrong
        self._done[id(records)] = (records, self._prepare(records))
        return response

    def prepare(self, records: list[Any]) -> PreparedPage:
        held, prepared = self._done.pop(id(records), (None, None))
        if held is records and prepared is not None:
            return prepared
        return self._prepare(records)


def _retained(page: Page) -> int:
    """The records a waiting page holds: all, or once prepared, those it still has to write."""
    return len(page.records) if page.prepared is None else page.prepared.retained


def _settled(page: Page) -> bool:
    return isinstance(page.prepared, PreparedPage) and page.prepared.settled


async def overlapped(
    pages: AsyncIterator[Page],
    prepare: Callable[[list[Any]], PreparedPage] | None = None,
    ahead_records: int = AHEAD_RECORDS,
    batch_records: int = BATCH_RECORDS,
) -> AsyncIterator[Page]:
    """Fetch ahead of the loader: up to `ahead_records` records wait while a batch is written.

    The pages waiting when the loader comes back are merged into one batch (up to
    `batch_records` records), so a fast source costs one transaction per batch rather than per
    page, and a slow one still loads each page as soon as it arrives. `prepare` (the writer's
    pure work: keys, change times, content hashes) runs on each page as it arrives, so on one
    core it fills the time the loader waits for the database instead of adding to it."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Condition()
    waiting = 0  # records in the queue

    def has_room() -> bool:
        return waiting < ahead_records

    async def produce() -> None:
        nonlocal waiting
        try:
            async for page in pages:
                if prepare is not None:
                    page.prepared = prepare(page.records)
                    # What is left to write is in `prepared` now: the parsed page goes at once,
                    # while still in the CPU's caches, not when its batch is done.
                    page.records = []
                    # Let the loader run between pages: pages that come without a wait (a fast
                    # source, a backlog) would otherwise be prepared in one go while the
                    # database idles, before the loader's next statement is even sent.
                    await asyncio.sleep(0)
                async with room:
                    await room.wait_for(has_room)
                    waiting += _retained(page)
                queue.put_nowait(page)
            queue.put_nowait(_DONE)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put_nowait(exc)
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    producer = asyncio.create_task(produce())
    try:
        ended: Any = None
        while ended is None:
            item = await queue.get()
            if item is _DONE or isinstance(item, BaseException):
                ended = item
                break
            batch = [item]
            size = _retained(item)
            while size < batch_records and not queue.empty():
                item = queue.get_nowait()
                if item is _DONE or isinstance(item, BaseException):
                    ended = item
                    break
                batch.append(item)
                size += _retained(item)
            async with room:
                waiting -= size
                room.notify_all()
            merged = merge(batch)
            if prepare is not None and len(batch) > 1:
                merged.prepared = PreparedPage.merged([page.prepared for page in batch])
            yield merged
        if isinstance(ended, BaseException):
            raise ended
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
