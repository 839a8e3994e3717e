"""The few records to write from the batches of a full scan, held until they fill a transaction.

A re-read where 1 % changed finds a record or two to write on each page: one transaction
(look-up, staging, merge, commit) per batch would cost more than reading the batch. A full
scan's pages move no state, and a crash only loses writes the next scan makes again, so they
wait here until enough are held or a second has passed.

They wait as JSON bytes in one buffer, not as the parsed records. Python's allocator keeps a
block of memory as long as one object in it lives: a record or two kept from every page (and
the strings and dates typed from them) pinned a little of each page's memory, and parsing and
hashing the following pages ran about 30 % slower on the scattered memory (measured: one
record kept per page of 100 made a quiet re-read of 200,000 records ~0.3 s slower). Parsing
the held records again when they are written costs ~2 us each.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pipeline.counts import latest
from pipeline.load.prepare import Batch, PreparedBatch, Rejected

Prepare = Callable[[Sequence[Any], bool], PreparedBatch]


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class HeldWrites:
    """`prepare`: the scan's pure stage, to prepare the held records again when released.
    `gauge`: told how many records wait (`pipeline_held_rows`), at each page held and each
    release."""

    def __init__(
        self, prepare: Prepare, records: int, seconds: float, gauge: Gauge | None = None
    ) -> None:
        self._prepare = prepare
        self._records = records  # how many make a batch
        self._seconds = seconds  # how long they may wait (and the run's counts go stale)
        self._gauge = gauge
        self._reset()

    def _reset(self) -> None:
        self._json = bytearray()
        self._ends = array("Q")
        self._numbers = array("q")
        self._rejected: list[Rejected] = []
        self._rejected_keys: list[object] = []
        self._read = self._unchanged = 0
        self._latest: datetime | None = None
        self._since = 0.0
        if self._gauge is not None:
            self._gauge.set(0)

    def __bool__(self) -> bool:
        return bool(self._numbers)

    def take(self, batch: Batch) -> bool:
        """Hold the batch's writes if it has some, but few: under half its records (a re-run;
        a first load's pages are all writes and go as they come) and under a batch."""
        prepared = batch.prepared
        if prepared.settled:
            return False
        writes = len(prepared.candidates) + len(prepared.rejected)
        if 2 * writes >= prepared.read or writes >= self._records:
            return False
        if not self:
            self._since = time.monotonic()
        for candidate in prepared.candidates.values():
            self._json += candidate.serialised
            self._ends.append(len(self._json))
        self._rejected += prepared.rejected
        candidates = set(prepared.candidates)
        self._rejected_keys += [k for k in prepared.seen_keys if k not in candidates]
        self._numbers.extend(batch.numbers)
        self._read += prepared.read
        self._unchanged += prepared.unchanged
        self._latest = latest(self._latest, prepared.unchanged_max_cursor)
        if self._gauge is not None:
            self._gauge.set(len(self._ends) + len(self._rejected))
        return True

    def due(self) -> bool:
        return bool(self) and (
            len(self._ends) + len(self._rejected) >= self._records
            or time.monotonic() - self._since >= self._seconds
        )

    def release(self) -> Batch:
        """The held writes as one batch, prepared again from their JSON."""
        # Bounds of each held record; a batch may hold none, only rejections.
        bounds = zip([0, *self._ends], self._ends, strict=False)
        records = [bytes(self._json[a:b]) for a, b in bounds]
        prepared = self._prepare(records, True)
        prepared.read = self._read
        prepared.unchanged += self._unchanged
        prepared.unchanged_max_cursor = latest(prepared.unchanged_max_cursor, self._latest)
        prepared.rejected += self._rejected
        prepared.seen_keys += self._rejected_keys
        batch = Batch(tuple(self._numbers.tolist()), prepared)
        self._reset()
        return batch

    def discard(self) -> None:
        """Drop what is held: the scan failed, and the next one finds these writes again."""
        self._reset()
