"""Full scan: the API cannot filter or sort by time, so every run reads every page.

What is written is decided by content (a quiet run writes nothing); after a complete scan the
deletions and the watermark (the high-water mark of change times, never past the run's start)
commit together. A scan that was not complete (`ListRead.complete`) settles neither. A
reconcile of a full-scan stream is the same run.
"""

from __future__ import annotations

from pipeline.load import TableWriter
from pipeline.run.strategies.scan import read_list, settle
from pipeline.run.stream_run import StreamRun
from pipeline.state import StreamState


async def full_scan(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    await writer.start_scan(scope=run.target.filter_scope)
    read = await read_list(run, writer, run.stream, run.stream.path)
    if not read.complete:
        return
    max_cursor = read.totals.max_cursor
    watermark = min(max_cursor, run.run_start) if max_cursor else None
    await settle(run, writer, run.stream, run.commit(watermark=watermark))
    run.advanced(watermark)
