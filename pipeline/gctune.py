"""Garbage-collector settings for a process that parses pages of JSON.

A page of parsed JSON is thousands of short-lived, acyclic containers (dicts and lists). With
CPython's default young-generation threshold (700 allocations) the cyclic collector runs several
times per page, and its older-generation passes walk every record waiting in the fetch queue and
the batch being written: 15-20 % of a full load's CPU, measured with `bench/run.py`. What the
process built at start-up (modules, settings, declarations) is frozen out of collection, and a
young generation of 100,000 objects keeps collection rare; cycles are still collected.
"""

from __future__ import annotations

import gc

# (young, middle, old): a young pass every 100,000 allocations, a middle one every 50 of those,
# an old one every 100 middle passes (and only when CPython's own 25 % growth rule agrees).
THRESHOLDS = (100_000, 50, 100)


def tune_for_bulk_records() -> None:
    """Call once, after start-up imports, in a process that will load records."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
