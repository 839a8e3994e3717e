"""Every statement the loader sends, named by what it is for.

A stream's table, staging tables and key tables are named from its declaration only (never
from input), so each statement is built once per stream from a `TableSql` and its parameters
are passed as `$n` values. Logic elsewhere asks for a statement by purpose (`sql.upsert()`,
`sql.count_absences(2)`) and never assembles SQL itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pipeline.streams import ChildTable, SourceSpec, Stream

SQL_TYPE = {
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

# The bookkeeping columns a loaded row gets besides its declared ones (in COPY order); `_source`
# is the instance it was read from (`[sources.<instance>]`), first in every primary key.
LOADED = ("data", "_hash", "_cursor", "_run_id", "_source")

QUARANTINE = (
    "INSERT INTO pipeline.quarantine (run_id, stream, record_key, reason, raw) "
    "VALUES ($1, $2, $3, $4, $5)"
)

# A table's secondary indexes (what a first load may build at its end instead of row by row).
SECONDARY_INDEXES = (
    "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition "
    "FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT i.indisprimary "
    "AND NOT i.indisunique AND NOT EXISTS "
    "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
)

ROW_ESTIMATE = "SELECT reltuples FROM pg_class WHERE oid = $1::regclass"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Scope:
    """The rows a scan covers (a partition, a filtered list): SQL conditions on the table
    (alias `t`, `{}` the value's placeholder) with their values."""

    conditions: tuple[tuple[str, Any], ...] = ()

    def sql(self, first_param: int) -> str:
        return "".join(
            " AND " + condition.format(f"${first_param + i}")
            for i, (condition, _) in enumerate(self.conditions)
        )

    @property
    def values(self) -> list[Any]:
        return [value for _, value in self.conditions]


@dataclass(frozen=True)
class TableSql:
    """The statements of one stream's table, its child tables and its temporary tables."""

    schema: str
    name: str
    key: str
    key_type: str
    columns: tuple[str, ...]
    children: tuple[tuple[str, str], ...]  # (child table, parent column)

    @classmethod
    def of(cls, source: SourceSpec, stream: Stream) -> TableSql:
        return cls(
            schema=source.schema,
            name=stream.name,
            key=stream.primary_key.name,
            key_type=SQL_TYPE[stream.primary_key.type.label],
            columns=tuple(c.name for c in stream.columns),
            children=tuple((c.name, c.parent_column) for c in stream.children),
        )

    # ---- names ----------------------------------------------------------------------------

    @property
    def table(self) -> str:
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def stage(self) -> str:
        """Rows to merge into the table (temporary, emptied at each commit)."""
        return f"stage_{self.schema}_{self.name}"

    @property
    def seen(self) -> str:
        """Keys the current scan met: what absences are judged against."""
        return ident(f"seen_{self.schema}_{self.name}")

    @property
    def absent(self) -> str:
        """Live rows in scope the finished scan did not meet."""
        return ident(f"absent_{self.schema}_{self.name}")

    @property
    def copy_columns(self) -> list[str]:
        return [*self.columns, *LOADED]

    def child_table(self, child: ChildTable) -> str:
        return f"{ident(self.schema)}.{ident(child.name)}"

    @cached_property
    def _k(self) -> str:
        return ident(self.key)

    # ---- set-up ---------------------------------------------------------------------------

    def create_stage(self) -> str:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {ident(self.stage)} "
            f"(LIKE {self.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )

    def create_key_tables(self) -> list[str]:
        return [
            f"CREATE TEMP TABLE IF NOT EXISTS {table} ({self._k} {self.key_type} PRIMARY KEY)"
            for table in (self.seen, self.absent)
        ]

    def forget_seen(self) -> str:
        return f"TRUNCATE {self.seen}"

    def any_row(self) -> str:
        """Whether the instance ($1) has a row in the table."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE _source = $1)"

    def live_in_scope(self, scope: Scope) -> str:
        """Live rows among those a scan covers (the mass-deletion guard's denominator)."""
        return f"SELECT count(*) FROM {self.table} t WHERE t._deleted_at IS NULL{scope.sql(1)}"

    def no_row(self) -> str:
        """Whether the table is empty, whatever the instance (only then may a load put its
        secondary indexes off: other instances' queries use them)."""
        return f"SELECT NOT EXISTS (SELECT 1 FROM {self.table})"

    def stored_hashes(self, scope: Scope) -> str:
        """Every live row in scope as 25 bytes in one value: its hash, its cursor in
        microseconds since 2000-01-01 (as timestamptz_send writes it; the smallest bigint for
        none) and 1 where an earlier scan missed it; and how many hashes are not 16 bytes
        long (then none are taken). Postgres 15 cannot aggregate in parallel, and grouping
        into parts cost a sort as long as the scan."""
        no_cursor = "80" + "00" * 7
        return (
            "SELECT string_agg(t._hash || coalesce(timestamptz_send(t._cursor), "
            f"'\\x{no_cursor}'::bytea) || CASE WHEN t._absent_scans = 0 THEN '\\x00'::bytea "
            "ELSE '\\x01'::bytea END, ''::bytea) FILTER (WHERE length(t._hash) = 16) AS packed, "
            "count(*) FILTER (WHERE length(t._hash) <> 16) AS odd "
            f"FROM {self.table} t WHERE t._deleted_at IS NULL{scope.sql(1)}"
        )

    # ---- a batch's transaction ------------------------------------------------------------

    def stored_versions(self) -> str:
        """Hash, cursor and liveness of the instance's ($2) stored rows under a batch's keys
        ($1); the keys are noted as seen by the scan in the same statement (one round trip)."""
        keys = f"$1::{self.key_type}[]"
        return (
            f"WITH seen AS (INSERT INTO {self.seen} SELECT unnest({keys}) "
            f"ON CONFLICT DO NOTHING) "
            f"SELECT {self._k} AS k, _hash, _cursor, "
            f"(_deleted_at IS NOT NULL OR _absent_scans <> 0) AS revive FROM {self.table} "
            f"WHERE _source = $2 AND {self._k} = ANY({keys})"
        )

    @cached_property
    def _upsert_parts(self) -> tuple[str, str]:
        names = self.copy_columns
        cols = ", ".join(map(ident, names))
        updates = ", ".join(
            f"{ident(n)} = EXCLUDED.{ident(n)}" for n in names if n not in (self.key, "_source")
        )
        return cols, updates

    def upsert(self, *, rewrite: bool = False) -> str:
        """Merge the staged rows: a row is written where its content differs (or it comes
        back from deleted / absent), or always with `rewrite` (a backfill repairing rows),
        but never over a stored row whose change time is newer."""
        cols, updates = self._upsert_parts
        changed = (
            ""
            if rewrite
            else "(t._hash <> EXCLUDED._hash OR t._deleted_at IS NOT NULL OR t._absent_scans <> 0) AND "
        )
        return (
            f"INSERT INTO {self.table} AS t ({cols}, _synced_at, _deleted_at, _absent_scans) "
            f"SELECT {cols}, now(), NULL, 0 FROM {ident(self.stage)} "
            f"ON CONFLICT (_source, {self._k}) DO UPDATE SET {updates}, "
            f"_synced_at = now(), _deleted_at = NULL, _absent_scans = 0 "
            f"WHERE {changed}"
            f"(t._cursor IS NULL OR EXCLUDED._cursor IS NULL OR EXCLUDED._cursor >= t._cursor) "
            f"RETURNING t.{self._k} AS k, (xmax = 0) AS inserted"
        )

    def delete_children(self, child_table: str, parent_column: str) -> str:
        """Child rows of the instance's ($2) parents in $1 (replaced with their parent)."""
        return (
            f"DELETE FROM {ident(self.schema)}.{ident(child_table)} "
            f"WHERE _source = $2 AND {ident(parent_column)} = ANY($1::{self.key_type}[])"
        )

    # ---- after a complete scan ------------------------------------------------------------

    def note_seen(self) -> str:
        """Count the keys in $1 as seen by the scan without loading them."""
        return (
            f"INSERT INTO {self.seen} SELECT unnest($1::{self.key_type}[]) ON CONFLICT DO NOTHING"
        )

    def forget_absent(self) -> str:
        return f"TRUNCATE {self.absent}"

    def _unseen(self) -> str:
        return (
            f"t._deleted_at IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {self.seen} s WHERE s.{self._k} = t.{self._k})"
        )

    def find_absent(self, scope: Scope) -> str:
        """Live rows in scope the scan did not see, into the absent table (one pass)."""
        return (
            f"INSERT INTO {self.absent} SELECT t.{self._k} FROM {self.table} t "
            f"WHERE {self._unseen()}{scope.sql(1)}"
        )

    def find_absent_among(self, scope: Scope) -> str:
        """The same, only among the rows whose hashes ($1) the scan did not meet in memory."""
        return (
            f"INSERT INTO {self.absent} SELECT t.{self._k} FROM {self.table} t "
            f"JOIN unnest($1::bytea[]) AS u(h) ON t._hash = u.h "
            f"WHERE {self._unseen()}{scope.sql(2)}"
        )

    def _still_absent(self, source: str) -> str:
        """The instance's (`source`, a placeholder) rows of the absent set not seen since (a
        probe may have proved some alive)."""
        return (
            f"t._source = {source} AND "
            f"t.{self._k} = ANY(ARRAY(SELECT a.{self._k} FROM {self.absent} a)) AND {self._unseen()}"
        )

    def absent_keys(self) -> str:
        """Delete candidates of the instance ($2), up to $1 of them."""
        return (
            f"SELECT t.{self._k} AS k FROM {self.table} t WHERE {self._still_absent('$2')} "
            f"ORDER BY 1 LIMIT $1"
        )

    def count_absences(self, min_absent_scans: int) -> str:
        """One more absent scan for every row still absent; deleted are those confirmed gone
        ($1, a 404 from their detail endpoint) and those absent `min_absent_scans` times in a
        row; $2 the run, $3 the instance. Returns how many were marked deleted."""
        gone = (
            f"(t.{self._k} = ANY($1::{self.key_type}[]) "
            f"OR t._absent_scans + 1 >= {int(min_absent_scans)})"
        )
        return (
            f"WITH counted AS (UPDATE {self.table} t SET "
            f"_absent_scans = t._absent_scans + 1, "
            f"_deleted_at = CASE WHEN {gone} THEN now() END, "
            f"_synced_at = CASE WHEN {gone} THEN now() ELSE t._synced_at END, "
            f"_run_id = CASE WHEN {gone} THEN $2 ELSE t._run_id END "
            f"WHERE {self._still_absent('$3')} RETURNING t._deleted_at) "
            f"SELECT count(*) FILTER (WHERE _deleted_at IS NOT NULL) FROM counted"
        )

    def retire_partitions(self, column: str) -> str:
        """Snapshot streams: the instance's ($3) live rows whose partition (`column`) is not
        among $1 are gone; $2 the run."""
        return (
            f"UPDATE {self.table} t SET _deleted_at = now(), _synced_at = now(), _run_id = $2 "
            f"WHERE t._source = $3 AND t._deleted_at IS NULL "
            f"AND NOT (t.{ident(column)} = ANY($1::text[]))"
        )

    # ---- rederive -------------------------------------------------------------------------

    def create_rederive_stage(self, stage: str, names: Sequence[str]) -> list[str]:
        """A staging table with the table's own types for the rewritten columns, made afresh
        (an older one of this connection would miss a column added since)."""
        columns = ", ".join([self._k, *map(ident, names)])
        return [
            f"DROP TABLE IF EXISTS pg_temp.{ident(stage)}",
            f"CREATE TEMP TABLE {ident(stage)} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {self.table} WITH NO DATA",
        ]

    def stored_batch(
        self, *, after: bool, since: bool, until: bool, scope: Scope
    ) -> tuple[str, int]:
        """The next stored rows in key order (keyset: after $1 if `after`), within the change
        time window, locked until the batch commits; the limit is the last parameter, whose
        number is returned with the statement. Parameters: [after] [since] [until] scope...
        limit."""
        conditions: list[str] = []
        n = 0
        if after:
            n += 1
            conditions.append(f"t.{self._k} > ${n}::text::{self.key_type}")
        if since:
            n += 1
            conditions.append(f"t._cursor >= ${n}")
        if until:
            n += 1
            conditions.append(f"t._cursor <= ${n}")
        scoped = scope.sql(n + 1)
        n += len(scope.conditions)
        where = " AND ".join(conditions) or "true"
        return (
            f"SELECT t.{self._k} AS k, t.data::text AS data FROM {self.table} t "
            f"WHERE {where}{scoped} ORDER BY t.{self._k} LIMIT ${n + 1} FOR UPDATE",
            n + 1,
        )

    def rederive_from_stage(self, stage: str, names: Sequence[str]) -> str:
        """Copy the retyped columns of the staged rows into the instance's ($2) rows; $1 the
        run."""
        sets = ", ".join(f"{ident(n)} = s.{ident(n)}" for n in names)
        return (
            f"UPDATE {self.table} t SET {sets}, _synced_at = now(), _run_id = $1 "
            f"FROM {ident(stage)} s WHERE t._source = $2 AND t.{self._k} = s.{self._k}"
        )
