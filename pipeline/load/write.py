"""Writing: a prepared batch and what commits with it, in ONE transaction.

Per batch:
1. the stored versions of the batch's keys are read (one statement, which also notes the keys
   as seen by the scan; skipped on a first load into an empty table), and only new or changed
   records (or ones that come back from deleted/absent) are typed and written;
2. a record whose value does not fit its column goes to `pipeline.quarantine` with the batch's
   rejected records; the rest of the batch goes on;
3. rows with new keys are COPied straight into the table; changed ones into a temporary
   staging table, merged with one upsert (`TableSql.upsert`: a replayed old version never
   overwrites a newer one); child rows are replaced with their parent;
4. the `Commit` (run counts, watermark, checkpoint) is written in the same transaction.

A batch found unchanged in memory with nothing to commit needs no transaction at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg

from pipeline.counts import PageResult, latest
from pipeline.load import indexes
from pipeline.load.absences import Absences
from pipeline.load.commit import Commit
from pipeline.load.guard import DeletionGuard, HeldBack, Settled
from pipeline.load.prepare import PreparedBatch, Preparer, Rejected, raw_text
from pipeline.load.rows import Typist
from pipeline.load.sql import QUARANTINE, Scope, TableSql
from pipeline.load.stored import StoredHashes
from pipeline.logs import get_logger, secrets
from pipeline.streams import Deletions, SourceSpec, Stream
from pipeline.text import printable

log = get_logger(__name__)


class TableWriter:
    """Loads batches of one stream into its table over one connection (the stream's, which
    also holds the stream's advisory lock).

    `rewrite` (a backfill): every record read is written, even where its content hash equals
    the stored row's, because the point is to repair rows altered in the table (a manual
    UPDATE, a column a migration added); only a stored row with a newer change time is left
    alone."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        source: SourceSpec,
        stream: Stream,
        run_id: uuid.UUID,
        context: Mapping[str, Any] | None = None,
        *,
        rewrite: bool = False,
        instance: str | None = None,
        guard: DeletionGuard | None = None,
    ) -> None:
        self.conn = conn
        self.guard = guard or DeletionGuard()
        # The `[sources.<instance>]` the rows are read from: their `_source`.
        self.instance = instance or source.name
        self.stream = stream
        self.run_id = run_id
        self.rewrite = rewrite
        self.stream_key = f"{self.instance}.{stream.name}"
        self.sql = TableSql.of(source, stream)
        self.typist = Typist(stream.columns, stream.children)
        self._context: dict[str, Any] = dict(context or {})
        self.key_index = list(self.sql.columns).index(self.sql.key)
        # Whether the table was empty when the current scan began (see `_changed_keys`).
        self._first_load = False
        # `data` is jsonb, not json, though Postgres parses jsonb at about 1.7x json's cost on
        # COPY (3.5 s against 2.0 s for 200,000 records): BI users need the jsonb operators and
        # GIN indexes, and the cost is paid only for new or changed rows (the hash is checked
        # first), a few percent of a nightly run.
        self.preparer = Preparer(stream, self.typist, run_id, self._context, self.instance)
        min_absent = 1 if stream.deletions is Deletions.SNAPSHOT else 2
        self.absences = Absences(conn, self.sql, min_absent, run_id, self.instance)

    # ---- set-up -----------------------------------------------------------------------------

    async def set_up(self) -> None:
        """Create this connection's staging and key tables; call once per stream run."""
        await self.conn.execute(self.sql.create_stage())
        for statement in self.sql.create_key_tables():
            await self.conn.execute(statement)
        await self.conn.execute(self.sql.forget_seen())

    async def start_scan(
        self,
        partition: tuple[str, Any] | None = None,
        scope: Sequence[tuple[str, Any]] = (),
    ) -> Preparer:
        """Begin a complete scan of one list; returns the scan's pure stage.

        `partition` `(column, value)`: every row loaded gets that value in that column, and
        only rows with it can be judged absent. `scope`: more SQL conditions (`{}` is the
        value's placeholder, `t` the table) narrowing where absences count, for filtered lists."""
        fixed = {partition[0]: partition[1]} if partition else {}
        conditions = [("t._source = {}", self.instance), *scope]
        if partition:
            conditions.append((f't."{partition[0]}" = {{}}', partition[1]))
        covered = Scope(tuple(conditions))
        await self.conn.execute(self.sql.forget_seen())
        self._first_load = not await self.conn.fetchval(self.sql.any_row(), self.instance)
        if self._first_load and await self.conn.fetchval(self.sql.no_row()):
            await indexes.defer(self.conn, self.sql.table, self.stream_key, self.run_id)
        stored = await StoredHashes.load(self.conn, self.sql, covered)
        self.preparer = Preparer(
            self.stream, self.typist, self.run_id, self._context, self.instance, fixed, stored
        )
        self.absences.begin(covered, stored, first_load=self._first_load)
        return self.preparer

    def prepare(self, records: Sequence[Any], unwrapped: bool = False) -> PreparedBatch:
        """The current scan's pure stage (`Preparer`) on some records."""
        return self.preparer(records, unwrapped)

    async def finish_load(self) -> None:
        """After the pages of a scan: build the indexes a first load put off (`indexes`)."""
        await indexes.restore(self.conn, self.stream_key)

    # ---- the transaction --------------------------------------------------------------------

    async def write(self, batch: PreparedBatch, commit: Commit | None = None) -> PageResult:
        """Write a prepared batch and `commit` in one transaction (none when the batch was
        found unchanged in memory and nothing is to commit)."""
        result = PageResult(read=batch.read, max_cursor=batch.unchanged_max_cursor)
        for candidate in batch.candidates.values():
            result.max_cursor = latest(result.max_cursor, candidate.cursor)
        if batch.settled and commit is None:
            result.unchanged = batch.unchanged
            return result
        async with self.conn.transaction():
            new, changed = await self._changed_keys(batch)
            new_rows, children, bad_new = self._typed_rows(new, batch)
            rows, changed_children, bad_changed = self._typed_rows(changed, batch)
            children.update(changed_children)
            bad_values = [*bad_new, *bad_changed]
            rejected = [*batch.rejected, *bad_values]
            result.quarantined = len(rejected)
            if rejected:
                await self.quarantine(rejected)
            if new_rows and not await self._copy_new(new_rows):
                rows, new_rows = [*new_rows, *rows], []  # one was stored after all: merge all
            if new_rows:
                result.inserted = len(new_rows)
                if self.stream.children:
                    written = [row[self.key_index] for row in new_rows]
                    await self._insert_children(written, children)
            if rows:
                await self.conn.copy_records_to_table(
                    self.sql.stage, records=rows, columns=self.sql.copy_columns
                )
                flags = await self.conn.fetch(self.sql.upsert(rewrite=self.rewrite))
                inserted = sum(1 for f in flags if f["inserted"])
                result.inserted += inserted
                result.updated = len(flags) - inserted
                if self.stream.children:
                    await self.replace_children([f["k"] for f in flags], children)
            result.unchanged = batch.unchanged + (
                len(batch.candidates) - len(bad_values) - result.inserted - result.updated
            )
            if commit is not None:
                await commit.apply(self.conn, result)
        return result

    def _typed_rows(
        self, keys: Sequence[Any], batch: PreparedBatch
    ) -> tuple[list[tuple[Any, ...]], dict[Any, list[list[tuple[Any, ...]]]], list[Rejected]]:
        """COPY rows (and child rows) for the records to write, typing those not typed yet; a
        value that does not fit its column rejects its record, with the field named."""
        rows, children, rejected = [], {}, []
        for key in keys:
            candidate = batch.candidates[key]
            if candidate.row is None:
                try:
                    candidate.row, candidate.children = self.preparer.typed(key, candidate)
                except ValueError as exc:
                    rejected.append(Rejected(str(key), str(exc), raw_text(candidate.record)))
                    continue
            rows.append(candidate.row)
            if self.stream.children:
                children[key] = candidate.children
        return rows, children, rejected

    async def _copy_new(self, rows: list[tuple[Any, ...]]) -> bool:
        """COPY rows whose keys are not in the table straight in, without the staging table
        and the merge (no other writer while we hold the stream's lock).

        On a first load the keys were not looked up (see `_changed_keys`): a key this scan
        already wrote (the same record on two pages of a moving list) fails the COPY, which is
        then undone to a savepoint and False returned, for the caller to merge the rows instead."""
        sql = self.sql
        if not self._first_load:
            await self.conn.copy_records_to_table(
                sql.name, schema_name=sql.schema, records=rows, columns=sql.copy_columns
            )
            return True
        try:
            async with self.conn.transaction():  # a savepoint
                await self.conn.copy_records_to_table(
                    sql.name, schema_name=sql.schema, records=rows, columns=sql.copy_columns
                )
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def replace_children(
        self, written: list[Any], children: Mapping[Any, list[list[tuple[Any, ...]]]]
    ) -> None:
        """Child rows follow their parent: the written parents' rows are replaced wholesale."""
        for child in self.stream.children:
            await self.conn.execute(
                self.sql.delete_children(child.name, child.parent_column), written, self.instance
            )
        await self._insert_children(written, children)

    async def _insert_children(
        self, written: list[Any], children: Mapping[Any, list[list[tuple[Any, ...]]]]
    ) -> None:
        for index, child in enumerate(self.stream.children):
            source = self.instance
            rows = [(source, *row) for key in written for row in children[key][index]]
            if rows:
                await self.conn.copy_records_to_table(
                    child.name,
                    schema_name=self.sql.schema,
                    records=rows,
                    columns=[
                        "_source",
                        child.parent_column,
                        "position",
                        *(c.name for c in child.columns),
                    ],
                )

    async def quarantine(self, rejected: list[Rejected]) -> None:
        await self.conn.executemany(
            QUARANTINE,
            [
                (
                    self.run_id,
                    self.stream_key,
                    # Shown by status, the dashboard, psql: no control sequence of a source's
                    # survives in them (`pipeline.text`). The raw record stays as it came.
                    None if r.key is None else printable(r.key),
                    printable(secrets.redact(r.reason)),
                    secrets.redact(r.raw),
                )
                for r in rejected
            ],
        )

    async def _changed_keys(self, batch: PreparedBatch) -> tuple[list[Any], list[Any]]:
        """Keys not stored yet, and keys whose content differs from the stored row (or that
        must come back to life) unless the stored version is newer: an old version never
        overwrites a new one. With `rewrite`, every stored key not newer is written.

        A first load (the table was empty when the scan began) looks nothing up and notes no
        seen keys: every row in the table was then written by this scan, so none can be absent
        at its end, and a key written twice is caught by `_copy_new`. That is an index probe and
        a seen-key insert less per record on the largest load a stream ever does."""
        if self._first_load:
            return list(batch.candidates), []
        if not batch.seen_keys:
            return [], []
        stored = await self.conn.fetch(self.sql.stored_versions(), batch.seen_keys, self.instance)
        self.absences.met([row["_hash"] for row in stored])
        known = {row["k"]: row for row in stored}
        new, out = [], []
        for key, candidate in batch.candidates.items():
            current = known.get(key)
            if current is None:
                new.append(key)
            elif current["revive"]:
                out.append(key)
            elif current["_hash"] == candidate.digest and not self.rewrite:
                continue
            elif (
                current["_cursor"] is not None
                and candidate.cursor is not None
                and candidate.cursor < current["_cursor"]
            ):
                continue
            else:
                out.append(key)
        return new, out

    # ---- after a complete scan --------------------------------------------------------------

    async def settle(self, confirmed_gone: Sequence[Any], commit: Commit | None = None) -> Settled:
        """After a complete scan, in one transaction: count an absent scan for every live row
        it did not see, mark deleted those confirmed gone or absent often enough, and write
        `commit`. Deletions beyond the guard's fraction are held back (`pipeline.load.guard`)."""
        async with self.conn.transaction():
            scope = self.absences.scope
            settled = await self._guarded(
                lambda: self.absences.record(confirmed_gone),
                self.sql.live_in_scope(scope),
                scope.values,
            )
            if commit is not None:
                await commit.apply(self.conn, PageResult())
        return settled

    async def commit_only(
        self, commit: Commit, retire: tuple[str, Sequence[Any]] | None = None
    ) -> Settled:
        """State that commits without rows of its own, in one transaction: `commit` (a
        cleared checkpoint, the watermark) and, after every partition of a snapshot stream,
        `retire` `(column, live values)`: rows of partitions (parents) that no longer exist are
        gone too, unless the guard holds them back."""
        settled = Settled()
        async with self.conn.transaction():
            if retire is not None:
                column, live = retire

                async def retired() -> int:
                    status = await self.conn.execute(
                        self.sql.retire_partitions(column), list(live), self.run_id, self.instance
                    )
                    return int(status.split()[-1])

                instance = Scope((("t._source = {}", self.instance),))
                settled = await self._guarded(
                    retired, self.sql.live_in_scope(instance), instance.values
                )
            await commit.apply(self.conn, PageResult())
        return settled

    async def _guarded(
        self, delete: Callable[[], Awaitable[int]], live_sql: str, live_args: Sequence[Any]
    ) -> Settled:
        """Mark deletions in a savepoint; undo them when the guard says they are too many."""
        try:
            async with self.conn.transaction():
                deleted = await delete()
                if deleted and self.guard.armed:
                    remaining = int(await self.conn.fetchval(live_sql, *live_args))
                    if self.guard.holds(deleted, remaining):
                        raise HeldBack(Settled(held=deleted), remaining + deleted)
        except HeldBack as held:
            log.warning(
                "deletions_held",
                table=self.stream.name,
                held=held.settled.held,
                live_before=held.live_before,
                max_delete_fraction=self.guard.max_fraction,
            )
            return held.settled
        return Settled(deleted=deleted)
