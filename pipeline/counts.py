"""What a batch, a scan or a run did to a table, counted: the numbers of `sync_runs` and logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None or (b is not None and b > a) else a


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

    def plus(self, other: PageResult) -> PageResult:
        total = PageResult()
        total.add(self)
        total.add(other)
        return total
