"""Partitioned: a parent list whose every record scopes a child list (Afosto price groups ->
prices, DigiLocker issuers -> document types).

The parent list is read first; then each parent's children are scanned as one unit, whose
completion is recorded in the stream's checkpoint with the unit's settling transaction, so a
crash resumes at the next parent. When every parent is done the checkpoint is cleared (and, for
snapshot streams, rows of vanished parents are retired) with the watermark. A list that was not
read completely (`ListRead.complete`, a parent list ending early) settles no absences, retires
no parent and leaves the watermark.

A parent that is not a stream of its own (price groups) is stored here; one that is (issuers)
is only listed, its own stream keeps its table.
"""

from __future__ import annotations

from pipeline.errors import ListEndedEarly, NotFound
from pipeline.extract.rawjson import parse_record
from pipeline.load import Batch, TableWriter
from pipeline.logs import get_logger
from pipeline.records import dig
from pipeline.run.fetch import segment
from pipeline.run.strategies.scan import read_list, settle
from pipeline.run.stream_run import StreamRun
from pipeline.state import StreamState
from pipeline.streams import Deletions, Partitions

log = get_logger(__name__)


async def partitioned(run: StreamRun, writer: TableWriter, state: StreamState) -> None:
    partitions = run.stream.partitions
    assert partitions is not None
    keys, complete = await _parent_keys(run, partitions)
    done = set((state.checkpoint or {}).get("done_partitions", []))
    if done:
        log.info("resuming_partitions", done=len(done & keys), total=len(keys))
    for key in sorted(keys - done):
        await writer.start_scan(partition=(partitions.column, key))
        path = run.stream.path.format(parent=segment(key))
        try:
            read = await read_list(run, writer, run.stream, path, parent=key)
        except NotFound:
            log.warning("partition_gone", partition=key, path=path)
            continue
        done.add(key)
        commit = run.commit(checkpoint=(run.key, {"done_partitions": sorted(done)}))
        if read.complete:
            await settle(run, writer, run.stream, commit)
        else:  # read as far as it goes; its absences wait for a complete read
            complete = False
            await writer.commit_only(commit)
    watermark, retire = None, None
    max_cursor = run.outcome.totals.max_cursor
    if complete and max_cursor is not None:
        watermark = min(max_cursor, run.run_start)
    if complete and run.stream.deletions is Deletions.SNAPSHOT:
        retire = (partitions.column, sorted(keys))
    commit = run.commit(watermark=watermark, checkpoint=(run.key, None))
    run.settled(await writer.commit_only(commit, retire))
    run.advanced(watermark)


async def _parent_keys(run: StreamRun, partitions: Partitions) -> tuple[set[str], bool]:
    """Every parent's key, from a read of the parent list (stored when it is not a stream of
    its own, with its absences settled like any scan's), and whether that read was complete:
    if not, parents may be missing, so none is judged gone."""
    parent = partitions.parent
    stored_here = not any(s is parent for s in run.target.source.streams)
    parent_writer = None
    if stored_here:
        parent_writer = await run.writer(parent)
        await parent_writer.start_scan()
    keys: set[str] = set()
    complete = True
    paginator, fetch = run.lists(parent, parent.path)
    try:
        async for page in paginator.pages(
            fetch, start=None, concurrency=run.client.max_concurrency
        ):
            for element in page.records:
                try:
                    record = parse_record(element)
                except ValueError:
                    continue  # the parent's loader quarantines it
                record = dig(record, parent.record_path) if parent.record_path else record
                if isinstance(record, dict) and record.get(partitions.key) is not None:
                    keys.add(str(record[partitions.key]))
            if parent_writer is not None:
                batch = Batch(page.numbers, parent_writer.prepare(page.records))
                await run.load(parent_writer, batch)
    except ListEndedEarly:  # raised after its last page: every parent it read is in `keys`
        complete = False
    if parent_writer is not None:
        await parent_writer.finish_load()
        if complete:
            await settle(run, parent_writer, parent)
    return keys, complete
