"""What every complete scan shares: read a whole list into a table, then settle absences.

Reading: pages are prepared on arrival and judged against the stored hashes in memory; a
re-run's few writes are held (`pipeline.load.held`) and written in the background while the
scan reads on, since the pages in between are found unchanged and need no connection; anything
that needs the connection waits for that write first, so writes keep their order.

Settling: live rows the scan did not see are delete *candidates*; their detail endpoint is
asked (404 confirms a deletion, a record proves the row alive and is stored), then absences
are counted and deletions marked, with the scan's `Commit`, in one transaction. Only a
complete read settles: a list whose records ended long before the page count it claimed was
not read to that count (the pages it still claimed were not asked for), so a row missing from
it is not known absent. Its pages are loaded, nothing is settled, and the watermark waits:
taking the empty pages for the end could mark live rows deleted (two such scans in a row, with
no detail endpoint or an inconclusive one), while waiting can only put a deletion off.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from pipeline import metrics
from pipeline.counts import PageResult
from pipeline.errors import ListEndedEarly, NotFound, SourceHttpError
from pipeline.load import Batch, Commit, TableWriter
from pipeline.load.guard import Settled
from pipeline.load.held import HeldWrites
from pipeline.logs import get_logger
from pipeline.run.ahead import overlapped
from pipeline.run.fetch import preparing_on_arrival, segment
from pipeline.run.stream_run import HISTORY_EVERY_SECONDS, StreamRun
from pipeline.streams import Deletions, Stream

log = get_logger(__name__)

# A re-run's few writes are held until this many wait (`pipeline.load.held`).
HELD_RECORDS = 1000
# Detail-endpoint probes per run for delete candidates; beyond it, the two-scan rule decides.
MAX_DELETE_PROBES = 1000


@dataclass(frozen=True)
class ListRead:
    """What reading one list did, and whether it read the whole list: only a complete read
    may settle absences (and move a full scan's watermark)."""

    totals: PageResult
    complete: bool


async def read_list(
    run: StreamRun, writer: TableWriter, stream: Stream, path: str, parent: str | None = None
) -> ListRead:
    """Read every page of one list into the writer's table (its scan begun). A list whose
    records ended long before the page count it claimed (`ListEndedEarly`) is loaded as far
    as it was read, and is not complete."""
    paginator, fetch = run.lists(stream, path, parent)
    fetch = preparing_on_arrival(fetch, paginator.records_path, writer.prepare)
    pages = paginator.pages(fetch, start=None, concurrency=run.client.max_concurrency)
    totals = PageResult()
    gauge = metrics.held_rows(run.key, run.target.instance)
    held = HeldWrites(writer.prepare, HELD_RECORDS, HISTORY_EVERY_SECONDS, gauge)
    writing: asyncio.Task[PageResult] | None = None

    async def written() -> None:
        nonlocal writing
        if writing is not None:
            task, writing = writing, None
            totals.add(await task)

    complete = True
    try:
        try:
            async for batch in overlapped(pages, writer.prepare):
                if held.take(batch):
                    if held.due():
                        await written()
                        writing = asyncio.create_task(run.load(writer, held.release()))
                    continue
                quiet = run.quiet(batch, None)
                if not quiet:
                    await written()
                    if held:  # writes keep their order
                        totals.add(await run.load(writer, held.release()))
                totals.add(await run.load(writer, batch, quiet=quiet))
        except ListEndedEarly:  # raised after its last page: what was read is loaded below
            complete = False
        await written()
        if held:
            totals.add(await run.load(writer, held.release()))
        await writer.finish_load()
    finally:
        held.discard()  # empty unless the scan failed
        if writing is not None:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
    return ListRead(totals, complete)


async def settle(
    run: StreamRun, writer: TableWriter, stream: Stream, commit: Commit | None = None
) -> int:
    """After a complete scan: probe and mark deletions, with `commit`, in one transaction."""
    judged = stream.deletions is not Deletions.NEVER
    gone = await _probe_absent(run, writer, stream) if judged else []
    if judged:
        settled = await writer.settle(gone, commit)
    else:
        settled = await writer.commit_only(commit) if commit is not None else Settled()
    run.settled(settled)
    return settled.deleted


async def _probe_absent(run: StreamRun, writer: TableWriter, stream: Stream) -> list[Any]:
    """Ask the detail endpoint about rows the scan did not see: 404 confirms a deletion, a
    record proves the row alive (page drift hid it) and is stored; anything else leaves the
    decision to the two-scan rule."""
    if not stream.detail_path:
        return []
    candidates = await writer.absences.candidates(MAX_DELETE_PROBES)
    if not candidates:
        return []
    detail_path = stream.detail_path

    async def probe(key: Any) -> tuple[Any, Any]:
        try:
            response = await run.client.get(detail_path.format(id=segment(key)))
        except NotFound:
            return key, None
        except SourceHttpError as exc:
            log.warning("delete_probe_inconclusive", key=str(key), error=str(exc))
            return key, ...
        return key, response.body

    results = await asyncio.gather(*(probe(k) for k in candidates))
    gone = [key for key, body in results if body is None]
    alive = [(key, body) for key, body in results if body is not None and body is not ...]
    if alive and stream.detail_matches_list:
        bodies = [body for _, body in alive]
        await run.load(writer, Batch((0,), writer.prepare(bodies)))
    elif alive:
        await writer.absences.mark_seen([key for key, _ in alive])
    log.info(
        "delete_candidates_probed",
        table=stream.name,
        candidates=len(candidates),
        gone=len(gone),
        alive=len(alive),
    )
    return gone
