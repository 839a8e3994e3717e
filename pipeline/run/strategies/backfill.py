"""Backfill: re-read a window of the change time and rewrite it; the watermark never moves.

With the API's own filter where there is one (sorted streams: the paginator's `end`), else by
scanning and keeping the records in the window. Every record read is written (the writer's
`rewrite` mode), so a backfill repairs rows altered in the table. Progress is its own
checkpoint (stream key + "#backfill", position or pages done) committed with each batch, so a
crashed backfill resumes. A backfill split in slices (`--slices N`) runs one window per slice,
concurrently, each with a checkpoint of its own (key + "#backfill@<window>").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipeline import statekeys
from pipeline.counts import PageResult
from pipeline.errors import ListEndedEarly, PipelineError
from pipeline.extract.rawjson import parse_record
from pipeline.load import PreparedBatch, TableWriter
from pipeline.logs import get_logger
from pipeline.records import dig
from pipeline.run.ahead import overlapped
from pipeline.run.stream_run import StreamRun
from pipeline.state import StreamState, forget, read_state
from pipeline.streams import Cursor, Incremental, Stream

log = get_logger(__name__)


async def backfill(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    mode, stream = run.mode, run.stream
    cursor = stream.cursor
    if cursor is None or stream.partitions is not None:
        raise PipelineError(
            "this stream has no change time to choose a window by; "
            f"`pipeline sync {stream.name}` reloads it in full"
        )
    assert mode.since is not None
    # A slice's progress is its window's own, beside the other slices'.
    state_key = str(statekeys.backfill(run.key, mode.window if mode.sliced else ""))
    window = {
        "since": mode.since.isoformat(),
        "until": mode.until.isoformat() if mode.until else None,
    }
    saved = (await read_state(run.conn, state_key)).checkpoint or {}
    resume = saved if saved.get("window") == window else {}
    if resume:
        log.info("backfill_resuming", checkpoint=resume)
    sorted_by_cursor = stream.incremental is Incremental.SORTED_FILTER
    position = resume.get("position")
    done_pages: set[int] = set(resume.get("done_pages", []))
    paginator, fetch = run.lists(stream, stream.path)
    pages = paginator.pages(
        fetch,
        start=datetime.fromisoformat(position) if position else mode.since,
        end=mode.until,
        skip=frozenset() if sorted_by_cursor else frozenset(done_pages),
        concurrency=run.client.max_concurrency,
    )

    def prepare(records: Sequence[Any]) -> PreparedBatch:
        if sorted_by_cursor:  # the API kept only the window
            return writer.prepare(records)
        inside = [r for r in records if _in_window(stream, cursor, r, mode.since, mode.until)]
        return writer.prepare(inside)

    try:
        async for batch in overlapped(pages, prepare):
            if mode.dry_run:
                run.outcome.pages += len(batch.numbers)
                run.outcome.totals.read += batch.prepared.read
                if run.progress is not None:
                    run.progress(run.key, batch, PageResult(read=batch.prepared.read))
                continue
            done_pages.update(batch.numbers)
            progress: dict[str, Any] = {"window": window}
            if sorted_by_cursor and batch.checkpoint is not None:
                progress["position"] = batch.checkpoint.isoformat()
            else:
                progress["done_pages"] = sorted(done_pages)
            await run.load(writer, batch, run.commit(checkpoint=(state_key, progress)))
    except ListEndedEarly:
        pass  # what the list served is rewritten; a backfill settles no absence
    if not mode.dry_run:
        await forget(run.conn, state_key)


def _in_window(
    stream: Stream, cursor: Cursor, element: Any, since: datetime, until: datetime | None
) -> bool:
    try:
        record = parse_record(element)
        if stream.record_path:
            record = dig(record, stream.record_path)
        value = cursor.value(record) if isinstance(record, dict) else None
    except ValueError:
        return True  # the loader quarantines it, with its reason
    if value is None:
        return True
    return value >= since and (until is None or value <= until)
