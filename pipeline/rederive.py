"""`pipeline rederive`: retype a stream's stored rows from their `data` column, with no API call.

For after a migration adds a column, or after a fix to how a column or child table is typed:
every stored row is typed again by the loader's own code (`load.compile_row_builder`,
`load.convert_record`, `load.child_rows`), so a rederived row equals what a sync would have written
from the same record. Rows are taken in batches in primary-key order (keyset pagination); each
batch is locked, rewritten, its child rows replaced, and its checkpoint and run counts written,
in one transaction, so a killed rederive resumes after the last key it committed.

What a row got from outside its record is kept as stored, never recomputed from today's run:
the primary key (the row's identity), derived columns (a read date) and the partition column
(the price group a price was read under). `_hash` stays too: it is the hash of the source's
content, which has not changed. A record that no longer types goes to quarantine with its
reason, and its row is left as it was.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from pipeline import statekeys
from pipeline.counts import PageResult
from pipeline.errors import Interrupted
from pipeline.load.commit import Commit
from pipeline.load.prepare import Rejected
from pipeline.load.rows import child_rows, compile_row_builder, convert_record
from pipeline.load.sql import Scope
from pipeline.load.write import TableWriter
from pipeline.logs import get_logger
from pipeline.state import forget, read_state
from pipeline.streams import Column, SourceSpec, Stream
from pipeline.targets import StreamTarget

log = get_logger(__name__)

# Rows per transaction: few enough that a batch's locks and rewritten rows stay small, enough
# that the per-transaction cost (checkpoint, run counts) is noise.
BATCH_ROWS = 2000

# Called after each batch commits (progress).
Committed = Callable[[PageResult], None]


def kept_columns(stream: Stream) -> frozenset[str]:
    """Columns whose stored values stay: what a row got from outside its record."""
    kept = {stream.primary_key.name, *(c.name for c in stream.columns if c.derive is not None)}
    if stream.partitions is not None:
        kept.add(stream.partitions.column)
    return frozenset(kept)


def refusal(stream: Stream, *, windowed: bool) -> str | None:
    """Why rederiving this stream makes no sense, in one line; None when it does."""
    if windowed and stream.cursor is None:
        return (
            "this stream's records have no change time, so --since/--until cannot choose "
            "among them; run it without them to rederive every row"
        )
    kept = kept_columns(stream)
    if all(c.name in kept for c in stream.columns) and not stream.children:
        return "every column of this stream comes from outside its records: nothing to rederive"
    return None


def tables_of(source: SourceSpec, stream: Stream) -> list[Stream]:
    """The stream's table, after its parent's when the stream is what stores the parent
    (Afosto price groups have no stream of their own; DigiLocker issuers do)."""
    parent = stream.partitions.parent if stream.partitions is not None else None
    if parent is not None and not any(s is parent for s in source.streams):
        return [parent, stream]
    return [stream]


class _Table:
    """One table: the loader's typing code specialised to the columns a rederive rewrites."""

    def __init__(self, writer: TableWriter, scope: Sequence[tuple[str, Any]]) -> None:
        stream = writer.stream
        self.writer = writer
        self.stream = stream
        self.scope = Scope((("t._source = {}", writer.instance), *scope))
        self.columns: list[tuple[Column, tuple[str, ...]]] = [
            (c, c.source_path) for c in stream.columns
        ]
        kept = kept_columns(stream)
        # Kept columns are "fixed" for the typing code, so nothing is derived from today's run;
        # their placeholder values are never written back.
        self.placeholders: dict[str, Any] = dict.fromkeys(kept)
        self.build = compile_row_builder(self.columns, kept)
        self.rewritten = [i for i, c in enumerate(stream.columns) if c.name not in kept]
        self.names = [stream.columns[i].name for i in self.rewritten] + ["_cursor"]
        self.children = [
            (child, [(c, c.source_path) for c in child.columns]) for child in stream.children
        ]
        self.stage = f"rederive_{writer.sql.schema}_{stream.name}"

    async def prepare(self) -> None:
        """A staging table with the table's own column types, made afresh: a connection's
        older one would miss a column added since."""
        for statement in self.writer.sql.create_rederive_stage(self.stage, self.names):
            await self.writer.conn.execute(statement)

    def select(
        self, after: str | None, since: datetime | None, until: datetime | None, limit: int
    ) -> tuple[str, list[Any]]:
        """The next batch of stored rows after `after` (keyset), locked until the batch commits."""
        statement, _ = self.writer.sql.stored_batch(
            after=after is not None,
            since=since is not None,
            until=until is not None,
            scope=self.scope,
        )
        args = [v for v in (after, since, until) if v is not None]
        return statement, [*args, *self.scope.values, limit]

    def typed(self, key: Any, record: Any) -> tuple[tuple[Any, ...], list[list[tuple[Any, ...]]]]:
        """The staging row and child rows of one stored record; ValueError names what does
        not fit, as in a sync (`TableWriter._typed`)."""
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        try:
            values = self.build(record, self.placeholders, {})
        except ValueError:
            values = convert_record(record, self.columns, self.placeholders, {})  # the reason
        cursor = self.stream.cursor.value(record) if self.stream.cursor else None
        children = [child_rows(key, record, child, columns) for child, columns in self.children]
        return (key, *(values[i] for i in self.rewritten), cursor), children

    async def rewrite(self, rows: Sequence[asyncpg.Record]) -> PageResult:
        """Retype a batch of rows and write it; call inside the batch's transaction."""
        writer, conn = self.writer, self.writer.conn
        result = PageResult(read=len(rows))
        staged: list[tuple[Any, ...]] = []
        children: dict[Any, list[list[tuple[Any, ...]]]] = {}
        rejected: list[Rejected] = []
        for row in rows:
            try:
                staged_row, children[row["k"]] = self.typed(row["k"], orjson.loads(row["data"]))
            except ValueError as exc:
                rejected.append(Rejected(str(row["k"]), str(exc), row["data"]))
                continue
            staged.append(staged_row)
        if rejected:
            await writer.quarantine(rejected)  # the loader's own statement
        if staged:
            await conn.copy_records_to_table(
                self.stage, records=staged, columns=[writer.sql.key, *self.names]
            )
            await conn.execute(
                writer.sql.rederive_from_stage(self.stage, self.names),
                writer.run_id,
                writer.instance,
            )
            if self.children:
                await writer.replace_children([r[0] for r in staged], children)
        result.updated, result.quarantined = len(staged), len(rejected)
        return result


class Rederivation:
    """One rederive of one stream (its lock and run history are the runner's)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        target: StreamTarget,
        run_id: uuid.UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        self.conn = conn
        self.target = target
        self.run_id = run_id
        self.since, self.until = since, until
        self.batch_rows = batch_rows
        self.state_key = str(statekeys.rederive(target.key))
        self.window = {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }

    async def run(self, stop: asyncio.Event, history_row: int, committed: Committed) -> None:
        """Every table of the stream, batch by batch, from the checkpoint of an unfinished
        rederive of the same window; the checkpoint is dropped at the end."""
        saved = (await read_state(self.conn, self.state_key)).checkpoint or {}
        resume = saved if saved.get("window") == self.window else {}
        if resume:
            log.info("rederive_resuming", checkpoint=resume)
        streams = tables_of(self.target.source, self.target.stream)
        names = [s.name for s in streams]
        first = names.index(resume["table"]) if resume.get("table") in names else 0
        for index, stream in enumerate(streams[first:]):
            writer = TableWriter(
                self.conn, self.target.source, stream, self.run_id, instance=self.target.instance
            )
            scope = self.target.filter_scope if stream is self.target.stream else []
            table = _Table(writer, scope)
            await table.prepare()
            after = resume.get("after") if index == 0 else None
            await self._table(table, after, stop, history_row, committed)
        await forget(self.conn, self.state_key)

    async def _table(
        self,
        table: _Table,
        after: str | None,
        stop: asyncio.Event,
        history_row: int,
        committed: Committed,
    ) -> None:
        while True:
            if stop.is_set():
                raise Interrupted("asked to stop")
            started = time.monotonic()
            sql, args = table.select(after, self.since, self.until, self.batch_rows)
            async with self.conn.transaction():
                rows = await self.conn.fetch(sql, *args)
                if not rows:
                    return
                result = await table.rewrite(rows)
                after = str(rows[-1]["k"])
                progress = {"window": self.window, "table": table.stream.name, "after": after}
                commit = Commit(
                    self.run_id,
                    history_row=history_row,
                    pages=1,
                    checkpoint=(self.state_key, progress),
                )
                await commit.apply(self.conn, result)
            committed(result)
            log.info(
                "rederive_batch",
                table=table.stream.name,
                records=result.read,
                rewritten=result.updated,
                quarantined=result.quarantined,
                duration_ms=round((time.monotonic() - started) * 1000),
            )
            if len(rows) < self.batch_rows:
                return
