"""Writing one page: validate, quarantine, skip the unchanged, COPY + one upsert, in ONE transaction.

Per page:
1. every record is checked (object, primary key, cursor, typed columns); a bad one goes to
   `pipeline.quarantine` with its raw JSON and the reason, and the rest of the page goes on;
2. during a full scan, a record whose content hash is among the stored rows' (held in memory
   for the scan, `pipeline.stored`) is unchanged and goes no further; for the others the
   stored hashes of their keys are read (one statement, which also notes the keys as seen by
   the scan; skipped on a first load into an empty table), and only new or changed records
   (or ones that come back from deleted/absent) are written: a quiet run writes nothing;
3. rows with new keys are COPied straight into the table; changed ones into a temporary
   staging table, merged with one
   `INSERT ... ON CONFLICT DO UPDATE ... WHERE` the content differs and the incoming cursor is
   not older than the stored one (a replayed old page never overwrites newer data);
4. the caller's checkpoint (state, run counters) is written in the same transaction.

Identifiers in SQL come from declarations only, never from input.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import xxhash

from pipeline import indexes
from pipeline.logs import secrets
from pipeline.rawjson import RAW_TYPES, holds_nul, parse_record
from pipeline.stored import StoredHashes
from pipeline.streams import ChildTable, Column, Deletions, SourceSpec, Stream, dig

Checkpoint = Callable[[asyncpg.Connection, "PageResult"], Awaitable[None]]

_SQL_TYPE = {
    "text[]": "text[]",
    "bigint[]": "bigint[]",
    "text": "text",
    "bigint": "bigint",
    "boolean": "boolean",
    "timestamptz": "timestamptz",
    "date": "date",
    "numeric": "numeric",
    "jsonb": "jsonb",
}


@dataclass
class PageResult:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    max_cursor: datetime | None = None

    def add(self, other: PageResult) -> None:
        self.read += other.read
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.max_cursor = latest(self.max_cursor, other.max_cursor)


@dataclass
class Rejected:
    key: str | None
    reason: str
    raw: str


@dataclass(slots=True)
class Candidate:
    """A record that has a key and a readable cursor; typed only if it is to be written."""

    record: dict[str, Any]
    cursor: datetime | None
    serialised: bytes  # as the API sent it (key order kept), the `data` column's value
    digest: bytes
    # Its COPY row and child rows, once typed (ahead of time when it is known to be written).
    row: tuple[Any, ...] | None = None
    children: list[list[tuple[Any, ...]]] | None = None


@dataclass
class PreparedPage:
    """A page (or batch) after the pure, per-record work: done by the runner as pages arrive,
    so that it overlaps the database work of the batch before."""

    candidates: dict[Any, Candidate] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    # Keys to note as seen by the scan, which the database is asked about (during a full scan
    # with stored hashes in memory: only those of records not found unchanged there).
    seen_keys: list[Any] = field(default_factory=list)
    read: int = 0
    # Records found unchanged in memory (no candidate made), and their latest change time.
    unchanged: int = 0
    unchanged_max_cursor: datetime | None = None

    @property
    def retained(self) -> int:
        """Records kept for writing (candidates and rejections): what the page holds in memory."""
        return len(self.candidates) + len(self.rejected)

    @property
    def settled(self) -> bool:
        """Nothing to write, quarantine or ask the database about: every record was found
        unchanged in memory."""
        return not self.candidates and not self.rejected and not self.seen_keys

    def offer(self, key: Any, candidate: Candidate) -> None:
        """The same key twice in a batch: keep the newer version."""
        previous = self.candidates.get(key)
        if (
            previous is not None
            and candidate.cursor is not None
            and previous.cursor is not None
            and candidate.cursor < previous.cursor
        ):
            return
        self.candidates[key] = candidate

    @classmethod
    def merged(cls, pages: Sequence[PreparedPage]) -> PreparedPage:
        if len(pages) == 1:
            return pages[0]
        batch = cls()
        for page in pages:
            batch.read += page.read
            batch.unchanged += page.unchanged
            batch.unchanged_max_cursor = latest(
                batch.unchanged_max_cursor, page.unchanged_max_cursor
            )
            batch.rejected += page.rejected
            batch.seen_keys += page.seen_keys
            for key, candidate in page.candidates.items():
                batch.offer(key, candidate)
        return batch


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


def content_hash(serialised: bytes) -> bytes:
    """What decides whether a record changed: 128 bits of XXH3 over its JSON as the API sent it.

    Every record of every scan is hashed, so the hash is on the hot path of a quiet run:
    XXH3 costs ~0.06 us per 1 KB record where BLAKE2b costs ~1.2 us (`bench/run.py`), and
    change detection needs no resistance to a forging adversary (the source is the system of
    record). Keys are not sorted first (~1.2 us more): serialisers emit fields in a fixed
    order, and a source that did not would only cost rewrites, never wrong data."""
    return xxhash.xxh3_128_digest(serialised)


def _raw_text(record: Any) -> str:
    if type(record) in RAW_TYPES:
        return bytes(record).decode("utf-8", "replace")
    try:
        return orjson.dumps(record).decode()
    except TypeError:
        return repr(record)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class TableWriter:
    """Loads pages of one stream into its table over one connection (the stream's, which also
    holds the stream's advisory lock).

    `rewrite` (a backfill): every record is written, even where its content hash equals the
    stored row's, because the point is to repair rows altered in the table (a manual UPDATE,
    a column a migration added); only a stored row with a newer change time is left alone."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        source: SourceSpec,
        stream: Stream,
        run_id: uuid.UUID,
        context: Mapping[str, Any] | None = None,
        *,
        rewrite: bool = False,
    ) -> None:
        self.conn = conn
        self.rewrite = rewrite
        self.stream = stream
        self.run_id = run_id
        self.stream_key = f"{source.name}.{stream.name}"
        self.table = f"{_ident(source.schema)}.{_ident(stream.name)}"
        self.table_name = stream.name
        self.stage = _ident(f"stage_{source.schema}_{stream.name}")
        self.seen = _ident(f"seen_{source.schema}_{stream.name}")
        self.absent = _ident(f"absent_{source.schema}_{stream.name}")
        self._absent_known = False
        self.key = stream.primary_key
        self.key_index = [c.name for c in stream.columns].index(self.key.name)
        self.key_sql = _ident(self.key.name)
        self.key_type = _SQL_TYPE[self.key.type.label]
        self._key_path = self.key.source_path
        self._columns = [(c, c.source_path) for c in stream.columns]
        self._builders: dict[frozenset[str], RowBuilder] = {}
        # `data` is jsonb, not json, though Postgres parses jsonb at about 1.7x json's cost on
        # COPY (3.5 s against 2.0 s for 200,000 records): BI users need the jsonb operators and
        # GIN indexes, and the cost is paid only for new or changed rows (the hash is checked
        # first), a few percent of a nightly run.
        self.copy_columns = [c.name for c in stream.columns] + [
            "data",
            "_hash",
            "_cursor",
            "_run_id",
        ]
        # Whether the table was empty when the current scan began (see `_changed_keys`).
        self._first_load = False
        # The stored rows' hashes during a full scan (see `pipeline.stored`), else None.
        self._stored: StoredHashes | None = None
        # Columns whose values come from outside the record: part of its identity (`digest`).
        self._derived = [c for c in stream.columns if c.derive is not None]
        self.schema = source.schema
        self._children = [
            (
                child,
                f"{_ident(source.schema)}.{_ident(child.name)}",
                [(c, c.source_path) for c in child.columns],
            )
            for child in stream.children
        ]
        self._context: dict[str, Any] = dict(context or {})
        self._fixed: dict[str, Any] = {}
        self._scope: list[tuple[str, Any]] = []
        self._min_absent_scans = 1 if stream.deletions is Deletions.SNAPSHOT else 2

    # ---- set-up -----------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create this connection's staging (and seen-keys) tables; call once per stream run."""
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        # The keys the current scan saw (what absences are judged against), and the absent ones.
        for table in (self.seen, self.absent):
            await self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {table} ({self.key_sql} {self.key_type} PRIMARY KEY)"
            )
        await self.conn.execute(f"TRUNCATE {self.seen}")

    async def start_scan(
        self,
        partition: tuple[str, Any] | None = None,
        scope: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Begin a complete scan of one list.

        `partition` `(column, value)`: every row loaded gets that value in that column, and only
        rows with it can be judged absent. `scope`: more SQL conditions (`{}` is the value's
        placeholder, `t` the table) narrowing where absences count, for filtered lists."""
        self._fixed = {partition[0]: partition[1]} if partition else {}
        self._scope = list(scope)
        if partition:
            self._scope.append((f"t.{_ident(partition[0])} = {{}}", partition[1]))
        await self.conn.execute(f"TRUNCATE {self.seen}")
        self._absent_known = False
        self._first_load = not await self.conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {self.table})"
        )
        if self._first_load:
            await indexes.defer(self.conn, self.table, self.stream_key, self.run_id)
        scope_sql, scope_args = self._in_scope(1)
        self._stored = await StoredHashes.load(self.conn, self.table, scope_sql, scope_args)

    async def finish_load(self) -> None:
        """After the pages of a scan: build the indexes a first load put off (`indexes`)."""
        await indexes.restore(self.conn, self.stream_key)

    # ---- validation (pure) -----------------------------------------------------------------

    def prepare_page(self, records: Sequence[Any], unwrapped: bool = False) -> PreparedPage:
        """Key, change time and content hash of every record; no I/O. Rejects what has no usable
        key or cursor. `unwrapped`: the records are out of their wrappers already. Records may
        come raw, as the bytes the API sent (`pipeline.rawjson`): then they are hashed as they
        are and parsed only if they are to be written.

        During a full scan with the stored hashes in memory, a record is hashed first, and one
        found unchanged goes no further (the common case: no key, no cursor, no candidate). When
        most of a page is to be written (a first load), its records are typed here too, ahead
        of the database work. Otherwise typing waits until the database has said what changed:
        typing is the costly part."""
        page = PreparedPage(read=len(records))
        context = {**self._context, **self._fixed}
        stored = self._stored
        wrapper = self.stream.record_path
        raw = all(type(e) in RAW_TYPES for e in records)
        bare = [dig(e, wrapper) for e in records] if wrapper and not (unwrapped or raw) else records
        if stored is None or self._derived or not (raw or all(type(r) is dict for r in bare)):
            # No stored hashes, or the rare page with a bad element or derived columns:
            # record by record (the stored hashes, if any, are then asked per record).
            for element in records:
                self._add_element(page, element, context, unwrapped=unwrapped)
            if stored is not None and page.candidates:
                self._drop_unchanged(page, stored)
            return page
        serialised = bare if raw else [orjson.dumps(record) for record in bare]
        prefix = self._identity(None, context)
        digests = (
            [content_hash(prefix + bytes(s)) for s in serialised]
            if prefix
            else [content_hash(s) for s in serialised]
        )
        todo, page.unchanged_max_cursor = stored.judge(digests)
        page.unchanged = len(records) - len(todo)
        ahead = 2 * len(todo) >= len(records)  # mostly writes (a first load): type them now
        add = self._add_element if raw else self._add_candidate
        for i in todo:
            add(page, bare[i], context, serialised[i], digests[i], unwrapped=True, typed=ahead)
        return page

    def _add_element(
        self,
        page: PreparedPage,
        element: Any,
        context: Mapping[str, Any],
        serialised: Any = None,
        digest: bytes | None = None,
        unwrapped: bool = False,
        typed: bool = False,
    ) -> None:
        """`_add_candidate` for an element as it came: a raw one is parsed first (its bytes
        are then what is stored and hashed); one that is not JSON is rejected."""
        if type(element) in RAW_TYPES:
            try:
                parsed = parse_record(element)
            except ValueError as exc:
                page.rejected.append(Rejected(None, str(exc), _raw_text(element)))
                return
            serialised, element, unwrapped = bytes(element), parsed, True
        self._add_candidate(page, element, context, serialised, digest, unwrapped, typed)

    def _drop_unchanged(self, page: PreparedPage, stored: StoredHashes) -> None:
        """The record-by-record path's candidates, judged against the stored hashes."""
        keys = list(page.candidates)
        todo, page.unchanged_max_cursor = stored.judge([page.candidates[k].digest for k in keys])
        unchanged = set(keys) - {keys[i] for i in todo}
        for key in unchanged:
            del page.candidates[key]
        page.unchanged += len(unchanged)
        page.seen_keys = [key for key in page.seen_keys if key not in unchanged]

    def _identity(self, record: dict[str, Any] | None, context: Mapping[str, Any]) -> bytes:
        """What a record's hash covers besides its JSON: the values it gets from outside itself
        (the partition it was read under, derived columns such as a read date), so that an
        equal hash means the same row with the same content. That is what lets a full scan
        judge records by hash alone (`pipeline.stored`). Empty for most streams."""
        if not self._fixed and not self._derived:
            return b""
        outside = [*self._fixed.values()]
        if record is not None:
            outside += [c.derive(record, context) for c in self._derived]  # type: ignore[misc]
        return orjson.dumps(outside, default=str) + b"\n"

    def _add_candidate(
        self,
        page: PreparedPage,
        element: Any,
        context: Mapping[str, Any],
        serialised: bytes | None = None,
        digest: bytes | None = None,
        unwrapped: bool = False,
        typed: bool = False,
    ) -> None:
        """One record as a candidate (or a rejection); `typed`: its row is built now too."""
        wrapper = self.stream.record_path
        record = dig(element, wrapper) if wrapper and not unwrapped else element
        if not isinstance(record, dict):
            what = f"no object at '{'.'.join(wrapper)}'" if wrapper else "not a JSON object"
            page.rejected.append(Rejected(None, what, _raw_text(element)))
            return
        key: Any = None
        try:
            key = self._key_of(record, context)
            cursor = self.stream.cursor.value(record) if self.stream.cursor else None
            if serialised is None:
                serialised = orjson.dumps(record)
            if digest is None:
                digest = content_hash(self._identity(record, context) + serialised)
            candidate = Candidate(record, cursor, serialised, digest)
            if typed:
                candidate.row, candidate.children = self._typed(key, candidate, context)
        except ValueError as exc:
            page.rejected.append(
                Rejected(None if key is None else str(key), str(exc), _raw_text(record))
            )
            if key is not None:
                page.seen_keys.append(key)  # it exists at the source: never "absent"
            return
        page.seen_keys.append(key)
        page.offer(key, candidate)

    def _typed(
        self, key: Any, candidate: Candidate, context: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], list[list[tuple[Any, ...]]]]:
        """The COPY row and child rows of one record; ValueError names what does not fit."""
        record = candidate.record
        if holds_nul(candidate.serialised):
            raise ValueError("contains a NUL character, which Postgres cannot store")
        try:
            values = self._row_builder()(record, self._fixed, context)
        except ValueError:
            values = _convert(record, self._columns, self._fixed, context)  # the reason
        children = [
            _child_rows(key, record, child, columns) for child, _, columns in self._children
        ]
        row = (
            *values,
            candidate.serialised.decode(),
            candidate.digest,
            candidate.cursor,
            self.run_id,
        )
        return row, children

    def _row_builder(self) -> RowBuilder:
        """The typing function for the current scan's fixed columns (compiled once per set)."""
        fixed = frozenset(self._fixed)
        builder = self._builders.get(fixed)
        if builder is None:
            builder = self._builders[fixed] = compile_row_builder(self._columns, fixed)
        return builder

    def _typed_rows(
        self, keys: Sequence[Any], page: PreparedPage
    ) -> tuple[list[tuple[Any, ...]], dict[Any, list[list[tuple[Any, ...]]]], list[Rejected]]:
        """COPY rows (and child rows) for the records to write, typing those not typed yet; a
        value that does not fit its column rejects its record, with the field named."""
        context = {**self._context, **self._fixed}
        rows, children, rejected = [], {}, []
        for key in keys:
            candidate = page.candidates[key]
            if candidate.row is None:
                try:
                    candidate.row, candidate.children = self._typed(key, candidate, context)
                except ValueError as exc:
                    rejected.append(Rejected(str(key), str(exc), _raw_text(candidate.record)))
                    continue
            rows.append(candidate.row)
            if self._children:
                children[key] = candidate.children
        return rows, children, rejected

    def _key_of(self, record: dict[str, Any], context: Mapping[str, Any]) -> Any:
        if self.key.derive is not None:
            raw = self.key.derive(record, context)
            where = f"derived key '{self.key.name}'"
        else:
            raw = dig(record, self._key_path)
            where = f"primary key '{'.'.join(self._key_path)}'"
        if raw is None:
            raise ValueError(f"missing {where}")
        return self.key.type.convert(raw)

    # ---- the transaction --------------------------------------------------------------------

    async def write_page(
        self, records: Sequence[Any] | PreparedPage, checkpoint: Checkpoint | None = None
    ) -> PageResult:
        page = records if isinstance(records, PreparedPage) else self.prepare_page(records)
        result = PageResult(read=page.read, max_cursor=page.unchanged_max_cursor)
        for candidate in page.candidates.values():
            result.max_cursor = latest(result.max_cursor, candidate.cursor)
        if page.settled and checkpoint is None:
            result.unchanged = page.unchanged
            return result  # no transaction at all
        async with self.conn.transaction():
            new, changed = await self._changed_keys(page)
            new_rows, children, bad_new = self._typed_rows(new, page)
            rows, changed_children, bad_changed = self._typed_rows(changed, page)
            children.update(changed_children)
            bad_values = [*bad_new, *bad_changed]
            rejected = [*page.rejected, *bad_values]
            result.quarantined = len(rejected)
            if rejected:
                await self._quarantine(rejected)
            if new_rows and not await self._copy_new(new_rows):
                rows, new_rows = [*new_rows, *rows], []  # one was stored after all: merge all
            if new_rows:
                result.inserted = len(new_rows)
                if self._children:
                    await self._insert_children([row[self.key_index] for row in new_rows], children)
            if rows:
                await self.conn.copy_records_to_table(
                    self.stage.strip('"'), records=rows, columns=self.copy_columns
                )
                flags = await self.conn.fetch(self._upsert_sql())
                inserted = sum(1 for f in flags if f["inserted"])
                result.inserted += inserted
                result.updated = len(flags) - inserted
                if self._children:
                    await self._replace_children([f["k"] for f in flags], children)
            result.unchanged = page.unchanged + (
                len(page.candidates) - len(bad_values) - result.inserted - result.updated
            )
            if checkpoint is not None:
                await checkpoint(self.conn, result)
        return result

    async def _copy_new(self, rows: list[tuple[Any, ...]]) -> bool:
        """COPY rows whose keys are not in the table straight in, without the staging table
        and the merge (no other writer while we hold the stream's lock).

        On a first load the keys were not looked up (see `_changed_keys`): a key this scan
        already wrote (the same record on two pages of a moving list) fails the COPY, which is
        then undone to a savepoint and False returned, for the caller to merge the rows instead."""
        copy = self.conn.copy_records_to_table(
            self.table_name, schema_name=self.schema, records=rows, columns=self.copy_columns
        )
        if not self._first_load:
            await copy
            return True
        try:
            async with self.conn.transaction():  # a savepoint
                await copy
        except asyncpg.UniqueViolationError:
            return False
        return True

    async def _replace_children(
        self, written: list[Any], children: dict[Any, list[list[tuple[Any, ...]]]]
    ) -> None:
        """Child rows follow their parent: the written parents' rows are replaced wholesale."""
        for child, table, _ in self._children:
            await self.conn.execute(
                f"DELETE FROM {table} WHERE {_ident(child.parent_column)} = ANY($1::{self.key_type}[])",
                written,
            )
        await self._insert_children(written, children)

    async def _insert_children(
        self, written: list[Any], children: dict[Any, list[list[tuple[Any, ...]]]]
    ) -> None:
        for index, (child, _, columns) in enumerate(self._children):
            rows = [row for key in written for row in children[key][index]]
            if rows:
                await self.conn.copy_records_to_table(
                    child.name,
                    schema_name=self.schema,
                    records=rows,
                    columns=[child.parent_column, "position", *(c.name for c, _ in columns)],
                )

    async def _quarantine(self, rejected: list[Rejected]) -> None:
        await self.conn.executemany(
            "INSERT INTO pipeline.quarantine (run_id, stream, record_key, reason, raw) "
            "VALUES ($1, $2, $3, $4, $5)",
            [
                (
                    self.run_id,
                    self.stream_key,
                    r.key,
                    secrets.redact(r.reason),
                    secrets.redact(r.raw),
                )
                for r in rejected
            ],
        )

    async def _changed_keys(self, page: PreparedPage) -> tuple[list[Any], list[Any]]:
        """Keys not stored yet, and keys whose content differs from the stored row (or that
        must come back to life) unless the stored version is newer: an old version never
        overwrites a new one.

        A first load (the table was empty when the scan began) looks nothing up and notes no
        seen keys: every row in the table was then written by this scan, so none can be absent
        at its end, and a key written twice is caught by `_copy_new`. That is an index probe and
        a seen-key insert less per record on the largest load a stream ever does."""
        if self._first_load:
            return list(page.candidates), []
        if not page.seen_keys:
            return [], []
        stored = await self._stored_versions(page)
        if self._stored is not None:  # rows met under their key, though their content changed
            self._stored.mark_seen([row["_hash"] for row in stored])
        known = {row["k"]: row for row in stored}
        new, out = [], []
        for key, candidate in page.candidates.items():
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

    async def _stored_versions(self, page: PreparedPage) -> list[asyncpg.Record]:
        """Hash, cursor and liveness of the stored rows under the batch's keys; the keys are
        noted as seen by this scan in the same statement (one round trip)."""
        keys_type = f"{self.key_type}[]"
        return await self.conn.fetch(
            f"WITH seen AS (INSERT INTO {self.seen} SELECT unnest($1::{keys_type}) "
            f"ON CONFLICT DO NOTHING) "
            f"SELECT {self.key_sql} AS k, _hash, _cursor, "
            f"(_deleted_at IS NOT NULL OR _absent_scans <> 0) AS revive FROM {self.table} "
            f"WHERE {self.key_sql} = ANY($1::{keys_type})",
            page.seen_keys,
        )

    def _upsert_sql(self) -> str:
        if not hasattr(self, "_upsert"):
            names = [c.name for c in self.stream.columns] + ["data", "_hash", "_cursor", "_run_id"]
            cols = ", ".join(map(_ident, names))
            updates = ", ".join(
                f"{_ident(n)} = EXCLUDED.{_ident(n)}" for n in names if n != self.key.name
            )
            changed = (
                ""
                if self.rewrite
                else "(t._hash <> EXCLUDED._hash OR t._deleted_at IS NOT NULL OR t._absent_scans <> 0) AND "
            )
            self._upsert = (
                f"INSERT INTO {self.table} AS t ({cols}, _synced_at, _deleted_at, _absent_scans) "
                f"SELECT {cols}, now(), NULL, 0 FROM {self.stage} "
                f"ON CONFLICT ({self.key_sql}) DO UPDATE SET {updates}, "
                f"_synced_at = now(), _deleted_at = NULL, _absent_scans = 0 "
                f"WHERE {changed}"
                f"(t._cursor IS NULL OR EXCLUDED._cursor IS NULL OR EXCLUDED._cursor >= t._cursor) "
                f"RETURNING t.{self.key_sql} AS k, (xmax = 0) AS inserted"
            )
        return self._upsert

    # ---- after a complete scan --------------------------------------------------------------

    async def mark_seen(self, keys: Sequence[Any]) -> None:
        """Count rows as seen by this scan without loading them (proved alive elsewhere)."""
        await self.conn.execute(
            f"INSERT INTO {self.seen} SELECT unnest($1::{self.key_type}[]) ON CONFLICT DO NOTHING",
            list(keys),
        )

    def _in_scope(self, first_param: int) -> tuple[str, list[Any]]:
        """SQL restricting rows to what the current scan covers (partition, filters)."""
        sql = "".join(
            " AND " + condition.format(f"${first_param + i}")
            for i, (condition, _) in enumerate(self._scope)
        )
        return sql, [value for _, value in self._scope]

    async def _find_absent(self) -> None:
        """Live rows in scope that the finished scan did not see, into a temporary table: one
        pass over the stream's table per scan, however many questions follow (the delete
        probes, then the absence counts), instead of one anti-join over the table each."""
        if self._absent_known:
            return
        scope_sql, scope_args = self._in_scope(1)
        await self.conn.execute(f"TRUNCATE {self.absent}")
        if self._stored is not None:  # the rows whose stored hashes the scan did not meet
            unseen = self._stored.unseen()
            if unseen:
                scope_sql, scope_args = self._in_scope(2)
                await self.conn.execute(
                    f"INSERT INTO {self.absent} SELECT t.{self.key_sql} FROM {self.table} t "
                    f"JOIN unnest($1::bytea[]) AS u(h) ON t._hash = u.h "
                    f"WHERE t._deleted_at IS NULL AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.seen} s WHERE s.{self.key_sql} = t.{self.key_sql})"
                    f"{scope_sql}",
                    unseen,
                    *scope_args,
                )
        elif not self._first_load:  # else every row is this scan's (see `_changed_keys`)
            await self.conn.execute(
                f"INSERT INTO {self.absent} SELECT t.{self.key_sql} FROM {self.table} t "
                f"WHERE t._deleted_at IS NULL AND NOT EXISTS "
                f"(SELECT 1 FROM {self.seen} s WHERE s.{self.key_sql} = t.{self.key_sql})"
                f"{scope_sql}",
                *scope_args,
            )
        self._absent_known = True

    def _still_absent(self) -> str:
        """Rows of the absent set not seen since (a probe may have proved some alive)."""
        return (
            f"t.{self.key_sql} = ANY(ARRAY(SELECT a.{self.key_sql} FROM {self.absent} a)) "
            f"AND t._deleted_at IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {self.seen} s WHERE s.{self.key_sql} = t.{self.key_sql})"
        )

    async def absent_keys(self, limit: int) -> list[Any]:
        """Live rows the finished scan did not see: delete *candidates*, not deletions."""
        await self._find_absent()
        rows = await self.conn.fetch(
            f"SELECT t.{self.key_sql} AS k FROM {self.table} t WHERE {self._still_absent()} "
            f"ORDER BY 1 LIMIT $1",
            limit,
        )
        return [r["k"] for r in rows]

    async def record_absences(self, confirmed_gone: Sequence[Any]) -> int:
        """After a complete scan: count one more absent scan for every live row it did not see,
        and mark deleted the rows confirmed gone (a 404 on their detail endpoint) and those absent
        from `_min_absent_scans` complete scans in a row. Returns how many rows were marked deleted.

        Call inside the transaction that also commits the scan's watermark."""
        await self._find_absent()
        gone = (
            f"(t.{self.key_sql} = ANY($1::{self.key_type}[]) "
            f"OR t._absent_scans + 1 >= {self._min_absent_scans})"
        )
        return int(
            await self.conn.fetchval(
                f"WITH counted AS (UPDATE {self.table} t SET "
                f"_absent_scans = t._absent_scans + 1, "
                f"_deleted_at = CASE WHEN {gone} THEN now() END, "
                f"_synced_at = CASE WHEN {gone} THEN now() ELSE t._synced_at END, "
                f"_run_id = CASE WHEN {gone} THEN $2 ELSE t._run_id END "
                f"WHERE {self._still_absent()} RETURNING t._deleted_at) "
                f"SELECT count(*) FILTER (WHERE _deleted_at IS NOT NULL) FROM counted",
                list(confirmed_gone),
                self.run_id,
            )
        )

    async def retire_partitions(self, column: str, live: Sequence[Any]) -> int:
        """Snapshot streams: rows of partitions (parents) that no longer exist are gone too."""
        status = await self.conn.execute(
            f"UPDATE {self.table} t SET _deleted_at = now(), _synced_at = now(), _run_id = $2 "
            f"WHERE t._deleted_at IS NULL AND NOT (t.{_ident(column)} = ANY($1::text[]))",
            list(live),
            self.run_id,
        )
        return int(status.split()[-1])


# Values of these JSON types need no conversion for these column types (the common case).
_ALREADY_RIGHT = {"text": "str", "bigint": "int", "boolean": "bool"}


RowBuilder = Callable[[dict[str, Any], Mapping[str, Any], Mapping[str, Any]], list[Any]]


def compile_row_builder(
    columns: Sequence[tuple[Column, tuple[str, ...]]], fixed: frozenset[str] = frozenset()
) -> RowBuilder:
    """A function typing one record, specialised to the stream's columns and to the columns a
    scan fixes (a partition's value).

    The hot loop of a load: generic code spends most of its time on lookups and calls per
    column, so the column list is turned into straight-line code, with a type check that skips
    the converter when the JSON value already fits, and ISO timestamps parsed in line. Any
    ValueError sends the caller to `_convert`, which names the offending field.
    """
    lines = ["def build(record, fixed, context):"]
    names: dict[str, Any] = {"dig": dig, "fromisoformat": datetime.fromisoformat}
    for i, (column, path) in enumerate(columns):
        names[f"conv{i}"] = column.type.convert
        names[f"derive{i}"] = column.derive
        if column.name in fixed:
            lines.append(f"    v{i} = fixed[{column.name!r}]")
            continue
        if column.derive is not None:
            lines.append(f"    v{i} = derive{i}(record, context)")
        elif len(path) == 1:
            lines.append(f"    v{i} = record.get({path[0]!r})")
        else:
            lines.append(f"    v{i} = dig(record, {path!r})")
        fits = _ALREADY_RIGHT.get(column.type.label)
        if column.type.label == "timestamptz":  # the converter's rules, without the call
            lines.append(f"    if v{i} is not None:")
            lines.append(
                f"        v{i} = fromisoformat(v{i}) if type(v{i}) is str else conv{i}(v{i})"
            )
            lines.append(f"        if v{i}.tzinfo is None:")
            lines.append("            raise ValueError")
        elif fits == "str":
            lines.append(f"    if v{i} is not None and (type(v{i}) is not str or '\\x00' in v{i}):")
            lines.append(f"        v{i} = conv{i}(v{i})")
        elif fits == "int":  # and within bigint's range, or COPY fails the whole batch
            lines.append(
                f"    if v{i} is not None and (type(v{i}) is not int "
                f"or not -0x8000000000000000 <= v{i} <= 0x7FFFFFFFFFFFFFFF):"
            )
            lines.append(f"        v{i} = conv{i}(v{i})")
        elif fits is not None:
            lines.append(f"    if v{i} is not None and type(v{i}) is not {fits}:")
            lines.append(f"        v{i} = conv{i}(v{i})")
        else:
            lines.append(f"    if v{i} is not None:")
            lines.append(f"        v{i} = conv{i}(v{i})")
    lines.append("    return [" + ", ".join(f"v{i}" for i in range(len(columns))) + "]")
    exec("\n".join(lines), names)
    return names["build"]  # type: ignore[no-any-return]


def _convert(
    record: dict[str, Any],
    columns: Sequence[tuple[Column, tuple[str, ...]]],
    fixed: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Typed column values of one record (or array element); ValueError names the field."""
    values = []
    for column, path in columns:
        if fixed and column.name in fixed:
            values.append(fixed[column.name])
            continue
        if column.derive is not None:
            value = column.derive(record, context or {})
        elif len(path) == 1:  # most columns: one dict lookup, no path walk
            value = record.get(path[0])
        else:
            value = dig(record, path)
        if value is not None:
            try:
                value = column.type.convert(value)
            except ValueError as exc:
                raise ValueError(f"field '{'.'.join(path)}': {exc}") from None
        values.append(value)
    return values


def _child_rows(
    key: Any,
    record: dict[str, Any],
    child: ChildTable,
    columns: Sequence[tuple[Column, tuple[str, ...]]],
) -> list[tuple[Any, ...]]:
    elements = dig(record, child.source_path)
    if elements is None:
        return []
    if isinstance(elements, dict):  # a schema that says "object" where examples say "array"
        elements = [elements]
    if not isinstance(elements, list):
        raise ValueError(f"field '{child.path}': expected a list, got {type(elements).__name__}")
    rows = []
    for position, element in enumerate(elements):
        if not isinstance(element, dict):
            raise ValueError(f"field '{child.path}.{position}': expected an object")
        try:
            rows.append((key, position, *_convert(element, columns)))
        except ValueError as exc:
            raise ValueError(f"{child.path}.{position}: {exc}") from None
    return rows
