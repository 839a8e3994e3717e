"""Rederive: the stream's stored rows retyped from their `data`, no request to the source
(`pipeline.rederive` does the work; each batch commits its run counts and checkpoint)."""

from __future__ import annotations

from pipeline.counts import PageResult
from pipeline.load import Batch, PreparedBatch, TableWriter
from pipeline.rederive import Rederivation
from pipeline.run.stream_run import StreamRun
from pipeline.state import StreamState


async def rederive(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    assert run.history_row is not None

    def committed(result: PageResult) -> None:
        run.outcome.totals.add(result)
        run.outcome.pages += 1
        if run.progress is not None:
            batch = Batch((run.outcome.pages,), PreparedBatch(read=result.read))
            run.progress(run.key, batch, result)

    rederivation = Rederivation(
        run.conn,
        run.target,
        run.run_id,
        since=run.mode.since,
        until=run.mode.until,
        batch_rows=run.mode.batch_rows,
    )
    await rederivation.run(run.stop, run.history_row, committed)
