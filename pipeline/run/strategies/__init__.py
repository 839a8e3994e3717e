"""The ways of reading a stream, one small unit each, chosen from its declared facts here.

| strategy | when |
|---|---|
| `backfill` | `pipeline backfill`: a window of the change time, rewritten |
| `rederive` | `pipeline rederive`: stored rows retyped from `data`, no request |
| `reconcile_sorted` | `pipeline reconcile` of a sorted-filter stream: every record listed |
| `partitioned` | a stream read per parent record (also snapshots per parent) |
| `full_scan` | a stream the API cannot filter by time (also its reconcile) |
| `sorted_filter` | a stream the API filters and sorts by its change time |

Each takes the stream's run (`StreamRun`), the writer of its table and its state.
"""

from __future__ import annotations

from pipeline.run.strategies.backfill import backfill
from pipeline.run.strategies.full_scan import full_scan
from pipeline.run.strategies.partitioned import partitioned
from pipeline.run.strategies.rederive import rederive
from pipeline.run.strategies.sorted_filter import reconcile_sorted, sorted_filter
from pipeline.run.stream_run import Mode, Strategy
from pipeline.streams import Incremental, Stream


def strategy_for(stream: Stream, mode: Mode) -> Strategy:
    if mode.kind == "backfill":
        return backfill
    if mode.kind == "rederive":
        return rederive
    if mode.kind == "reconcile" and stream.incremental is Incremental.SORTED_FILTER:
        return reconcile_sorted
    if stream.partitions is not None:
        return partitioned
    if stream.incremental is Incremental.FULL_SCAN:
        return full_scan
    return sorted_filter


__all__ = ["Strategy", "strategy_for"]
