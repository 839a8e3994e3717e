"""Absences: which live rows a complete scan did not see, and when that means deleted.

A paged list can hide a row from one scan by drift, so a row missing from a scan is only a
*candidate* deletion: it is deleted once its detail endpoint answers 404 (the runner probes)
or it has been absent from `min_absent_scans` complete scans in a row (1 for snapshot
streams, whose one answer is the whole set). The rows the scan met are noted in a temporary
seen-keys table, or, during a full scan with the stored hashes in memory, in that array
(`pipeline.load.stored`); the absent ones are found in one pass over the table per scan,
however many questions follow.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from pipeline.load.sql import Scope, TableSql
from pipeline.load.stored import StoredHashes


class Absences:
    def __init__(
        self,
        conn: asyncpg.Connection,
        sql: TableSql,
        min_absent_scans: int,
        run_id: uuid.UUID,
        instance: str,
    ) -> None:
        self.conn = conn
        self.instance = instance
        self.sql = sql
        self.min_absent_scans = min_absent_scans
        self.run_id = run_id
        self._scope = Scope()
        self._stored: StoredHashes | None = None
        self._first_load = False
        self._known = False

    @property
    def scope(self) -> Scope:
        """The rows the current scan covers: where its silence can mean a deletion."""
        return self._scope

    def begin(self, scope: Scope, stored: StoredHashes | None, *, first_load: bool) -> None:
        """A new scan over `scope`: nothing seen yet (the caller emptied the seen keys)."""
        self._scope, self._stored, self._first_load = scope, stored, first_load
        self._known = False

    def met(self, stored_hashes: Sequence[bytes]) -> None:
        """Rows the database reported under keys the scan met (their content changed)."""
        if self._stored is not None:
            self._stored.mark_seen(stored_hashes)

    async def mark_seen(self, keys: Sequence[Any]) -> None:
        """Count rows as seen by this scan without loading them (proved alive elsewhere)."""
        await self.conn.execute(self.sql.note_seen(), list(keys))

    async def _find(self) -> None:
        if self._known:
            return
        await self.conn.execute(self.sql.forget_absent())
        if self._stored is not None:  # the rows whose stored hashes the scan did not meet
            unseen = self._stored.unseen()
            if unseen:
                await self.conn.execute(
                    self.sql.find_absent_among(self._scope), unseen, *self._scope.values
                )
        elif not self._first_load:  # else every row is this scan's
            await self.conn.execute(self.sql.find_absent(self._scope), *self._scope.values)
        self._known = True

    async def candidates(self, limit: int) -> list[Any]:
        """Live rows the finished scan did not see: delete *candidates*, not deletions."""
        await self._find()
        rows = await self.conn.fetch(self.sql.absent_keys(), limit, self.instance)
        return [r["k"] for r in rows]

    async def record(self, confirmed_gone: Sequence[Any]) -> int:
        """One more absent scan for every live row the scan did not see; deleted: those
        `confirmed_gone` and those absent often enough. Call inside the transaction that also
        commits the scan's watermark. Returns how many rows were marked deleted."""
        await self._find()
        statement = self.sql.count_absences(self.min_absent_scans)
        gone = list(confirmed_gone)
        return int(await self.conn.fetchval(statement, gone, self.run_id, self.instance))
