"""Run: what executes a stream's run, end to end.

    Runner ─▶ StreamRun (lock, history row) ─▶ strategy ─▶ pages ─▶ prepared batches ─▶ load
                                                  │            (ahead: fetched and prepared
                                                  │             while the batch before writes)
                                                  └─▶ settle: absences, deletions, watermark

- `runner`: a set of streams, concurrently, one client per source;
- `stream_run`: one stream's run (the unit a worker executes) and `load`, which writes a batch
  with the `Commit` saying what commits with it;
- `strategies`: one small unit per way of reading, chosen from the stream's declared facts;
- `fetch`: a list's paginator and fetch, records prepared on arrival; `ahead`: look-ahead.
"""

from __future__ import annotations

from pipeline.run.runner import Runner
from pipeline.run.slices import sliced, sliced_by_rows
from pipeline.run.stream_run import Mode, StreamOutcome, StreamRun

__all__ = ["Mode", "Runner", "StreamOutcome", "StreamRun", "sliced", "sliced_by_rows"]
