"""The mass-deletion guard: a source that suddenly lists a fraction of what it holds (an
outage answering with one page, a permission narrowed, a filter changed upstream), with detail
lookups answering 404, must not soft-delete most of a table in one run.

Each settling of a complete scan (`TableWriter.settle`, and a snapshot's retired partitions)
marks its deletions inside a savepoint; when they are more than `max_delete_fraction` of the
live rows they were among (the scan's scope: the instance, a partition, a filtered list), the
savepoint is rolled back: nothing is deleted and no absence is counted, while the rows the scan
loaded and its watermark still commit. The run then ends `held`, and `pipeline reconcile
STREAM --confirm-deletes` reads the source again and applies what it confirms without the guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.settings import DEFAULT_MAX_DELETE_FRACTION


@dataclass(frozen=True)
class Settled:
    """What one settling did: rows marked deleted, rows whose deletion was held back."""

    deleted: int = 0
    held: int = 0


@dataclass(frozen=True)
class DeletionGuard:
    """`max_fraction` None: no guard (a confirmed reconcile, or a stream set to 1)."""

    max_fraction: float | None = DEFAULT_MAX_DELETE_FRACTION

    @property
    def armed(self) -> bool:
        return self.max_fraction is not None and self.max_fraction < 1

    def holds(self, deleted: int, live_after: int) -> bool:
        """Whether `deleted` rows out of `live_after + deleted` live before are too many. One
        row alone is never held: a table of one row may lose it."""
        if not self.armed or deleted < 2:
            return False
        assert self.max_fraction is not None
        return deleted > self.max_fraction * (live_after + deleted)


class HeldBack(Exception):
    """Raised inside the settling's savepoint to roll its deletions back."""

    def __init__(self, settled: Settled, live_before: int) -> None:
        super().__init__(f"{settled.held} of {live_before} live rows")
        self.settled = settled
        self.live_before = live_before


__all__ = ["DEFAULT_MAX_DELETE_FRACTION", "DeletionGuard", "HeldBack", "Settled"]
