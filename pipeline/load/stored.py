"""The content hashes of a table's live rows, held in memory for the length of one full scan.

A source that cannot filter by time is re-read whole on every run, and nearly every record it
sends is unchanged. Asking Postgres about each batch's keys cost ~10 us of database time per
record (an index probe and a heap fetch each), which made a quiet re-run of 200,000 records
three times slower than reading them. With the stored hashes in memory (26 bytes a row, sorted,
read in one pass when the scan begins) a page is judged as it arrives, without a round trip:

- a record whose hash is among them is unchanged. The hash covers everything that identifies
  the row (`TableWriter._identity`), so an equal hash is that row, stored as sent: nothing to
  write, and the row is noted as seen;
- any other record (new, changed, or back from an earlier absence) goes on to the database,
  which decides as before, and the stored hash it reports is noted as seen too.

What the scan did not see is then a filter over the array, and Postgres is asked for those
rows' keys only when there are some. Tables larger than `MAX_ROWS` in the scanned scope keep
the per-batch look-up, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import numpy as np

from pipeline.load.sql import ROW_ESTIMATE, Scope, TableSql

# 26 bytes a row held (hash 16, cursor 8, flags 2), 52 MB at this size; about twice that for
# the moment it is read (the 25 bytes a row Postgres sends, and the sort order).
MAX_ROWS = 2_000_000

# As Postgres sends each row: the hash, the cursor in microseconds since 2000-01-01 (big-endian,
# as timestamptz_send writes it), and 1 where the row was missing from an earlier scan (it must be written
# to clear that, even when unchanged). A hash's two halves are read as native integers: any
# fixed reading sorts and compares alike, and a foreign byte order would cost a conversion of
# the whole array on every search.
_PACKED = np.dtype([("hi", "=u8"), ("lo", "=u8"), ("cursor", ">i8"), ("stale", "u1")])
_DIGEST = np.dtype([("hi", "=u8"), ("lo", "=u8")])
_NO_CURSOR = np.iinfo(np.int64).min  # as `TableSql.stored_hashes` writes a row without one
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # Postgres's


class StoredHashes:
    """Sorted hashes of the rows in a scan's scope, with their cursors, and what was seen."""

    def __init__(self, packed: np.ndarray) -> None:
        order = np.argsort(packed["hi"])
        self._hi = packed["hi"][order].astype(np.uint64)
        self._lo = packed["lo"][order].astype(np.uint64)
        self._cursor = packed["cursor"][order].astype(np.int64)
        self._stale = packed["stale"][order].astype(bool)
        self._seen = np.zeros(len(order), dtype=bool)

    def __len__(self) -> int:
        return len(self._hi)

    @classmethod
    async def load(
        cls, conn: asyncpg.Connection, sql: TableSql, scope: Scope
    ) -> StoredHashes | None:
        """None when the table is too large to hold (see `MAX_ROWS`) or holds a hash of
        another length (a version that hashed differently): the scan then asks per batch."""
        estimate = await conn.fetchval(ROW_ESTIMATE, sql.table)
        if estimate is not None and estimate > MAX_ROWS:
            return None
        row = await conn.fetchrow(sql.stored_hashes(scope), *scope.values)
        if row["odd"]:
            return None
        return cls(np.frombuffer(row["packed"] or b"", dtype=_PACKED))

    def _find(self, digests: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """For each digest: whether it is stored, and where. Array methods, not the `np.`
        functions: this runs once per page, and their dispatch cost more than the search."""
        halves = np.frombuffer(b"".join(digests), dtype=np.uint64)
        hi, lo = halves[0::2], halves[1::2]
        if not len(self._hi) or not len(hi):
            return np.zeros(len(hi), dtype=bool), np.zeros(len(hi), dtype=np.intp)
        at = self._hi.searchsorted(hi)
        at[at == len(self._hi)] = 0
        found = self._hi.take(at) == hi
        found &= self._lo.take(at) == lo
        # Two stored hashes sharing their first 8 bytes (~1 in 10^9 tables of 200,000 rows) put
        # the second after `at`: it is then simply not found, and the database decides.
        return found, at

    def judge(self, digests: Sequence[bytes]) -> tuple[list[int], datetime | None]:
        """The positions of the records not stored unchanged (to be written, or asked about);
        and the latest cursor among the others. Every record found is noted as seen."""
        if not len(self._hi) or not digests:
            return list(range(len(digests))), None
        found, at = self._find(digests)
        if found.all() and not self._stale.take(at).any():  # a quiet page: the common case
            self._seen[at] = True
            return [], self._as_time(int(self._cursor.take(at).max()))
        self._seen[at[found]] = True
        unchanged = found & ~self._stale.take(at)
        latest = None
        if unchanged.any():
            latest = self._as_time(int(self._cursor.take(at[unchanged]).max()))
        return (~unchanged).nonzero()[0].tolist(), latest

    @staticmethod
    def _as_time(micros: int) -> datetime | None:
        return None if micros == _NO_CURSOR else _EPOCH + timedelta(microseconds=micros)

    def mark_seen(self, digests: Sequence[bytes]) -> None:
        """Rows the database reported stored under keys the scan met (their content changed)."""
        if digests:
            found, at = self._find(digests)
            self._seen[at[found]] = True

    def unseen(self) -> list[bytes]:
        """The hashes of the rows the scan has not met so far."""
        missing = ~self._seen
        digests = np.empty(int(missing.sum()), dtype=_DIGEST)
        digests["hi"] = self._hi[missing]
        digests["lo"] = self._lo[missing]
        raw = digests.tobytes()
        return [raw[i : i + 16] for i in range(0, len(raw), 16)]
