"""A stream run's advisory lock, named once: one run of a stream at a time, across processes
and machines (`pipeline.run.stream_run` takes it; `pipeline.history` finds who holds it;
`pipeline reset` takes it before forgetting state).

Any login on the database may take any advisory lock (it needs no privilege), so a lock held
by someone else is a stream that does not run: the run is then recorded `skipped`, naming the
holder. The key is a 64-bit hash of the name; the hash of a given name is the same in every
session (`hashtextextended(name, 0)`).
"""

from __future__ import annotations

PREFIX = "pipeline.stream:"

TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
# Slices of one backfill share their stream's lock: together, never beside another run.
TRY_LOCK_SHARED = "SELECT pg_try_advisory_lock_shared(hashtextextended($1, 0))"
UNLOCK_SHARED = "SELECT pg_advisory_unlock_shared(hashtextextended($1, 0))"


def lock_name(key: str) -> str:
    """The lock of a stream (its key) or of a backfill slice (its state key)."""
    return PREFIX + key


__all__ = ["PREFIX", "TRY_LOCK", "TRY_LOCK_SHARED", "UNLOCK", "UNLOCK_SHARED", "lock_name"]
