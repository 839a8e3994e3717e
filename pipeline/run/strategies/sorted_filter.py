"""Sorted filter: the API filters `cursor >= watermark` and sorts by it (Valomnia).

Pages come in cursor order, so each page's checkpoint commits with it, never past the run's
start (late commits at the source stay covered), and a crash resumes where it stopped. Only a
reconcile (every record listed, not just what changed) can see deletions.
"""

from __future__ import annotations

from datetime import timedelta

from pipeline.errors import PipelineError
from pipeline.load import TableWriter
from pipeline.run.ahead import overlapped
from pipeline.run.strategies.scan import settle
from pipeline.run.stream_run import StreamRun
from pipeline.state import StreamState


async def sorted_filter(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    """Read from the watermark (minus lookback) in cursor order."""
    start = None
    if state.watermark is not None:
        start = state.watermark - timedelta(seconds=run.target.settings.lookback_seconds)
    paginator, fetch = run.lists(run.stream, run.stream.path)
    pages = paginator.pages(fetch, start=start, concurrency=run.client.max_concurrency)
    async for batch in overlapped(pages, writer.prepare):
        at = min(batch.checkpoint, run.run_start) if batch.checkpoint else None
        await run.load(writer, batch, run.commit(watermark=at) if at else None)


async def reconcile_sorted(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    """List every record, reload what is missing or stale, and settle deletions; the
    incremental watermark stays where it is."""
    if run.stream.reconcile_paginator is None:
        raise PipelineError("this API cannot list every record, so it cannot be reconciled")
    await writer.start_scan(scope=run.target.filter_scope)
    paginator, fetch = run.lists(
        run.stream, run.stream.path, paginator_factory=run.stream.reconcile_paginator
    )
    pages = paginator.pages(fetch, start=None, concurrency=run.client.max_concurrency)
    async for batch in overlapped(pages, writer.prepare):
        await run.load(writer, batch)
    await writer.finish_load()
    await settle(run, writer, run.stream)
