"""Fetch ahead of the loader: pages are prepared as they come and wait, bounded, as batches.

The producer walks the paginator, turns each page into a `Batch` (its records through the
pure stage, `pipeline.load.prepare`) and queues it; the loader takes what waits as one batch
(up to `batch_records` records), so a fast source costs one transaction per batch rather than
per page, and a slow one still loads each page as soon as it arrives. On one core the
preparing fills the time the loader waits for the database instead of adding to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pipeline.extract.paginators import Page
from pipeline.load import Batch, PreparedBatch
from pipeline.run.fetch import prepared

# Records fetched ahead of the loader at most (counted in records, not pages: a page holds 25
# records or 1,000): enough to fill the next batches while one is being written.
AHEAD_RECORDS = 12000
# Records per load transaction at most, when pages wait in the queue. A first load of 200,000
# shipments took 4.5 s in batches of 2,000 with 4,000 ahead and 4.1 s in batches of 4,000 with
# 12,000 ahead (`bench/`): fewer transactions, and Python keeps further ahead of Postgres.
BATCH_RECORDS = 4000

_DONE = object()


async def overlapped(
    pages: AsyncIterator[Page],
    prepare: Callable[[Sequence[Any]], PreparedBatch],
    ahead_records: int = AHEAD_RECORDS,
    batch_records: int = BATCH_RECORDS,
) -> AsyncIterator[Batch]:
    """Batches of the pages, prepared, with up to `ahead_records` records waiting (those a
    prepared page still has to write) while a batch is written."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Condition()
    waiting = 0  # records in the queue

    def has_room() -> bool:
        return waiting < ahead_records

    async def produce() -> None:
        nonlocal waiting
        try:
            async for page in pages:
                batch = Batch(page.numbers, prepared(page.records, prepare), page.checkpoint)
                del page  # the parsed records go at once, while still in the CPU's caches
                # Let the loader run between pages: pages that come without a wait (a fast
                # source, a backlog) would otherwise be prepared in one go while the database
                # idles, before the loader's next statement is even sent.
                await asyncio.sleep(0)
                async with room:
                    await room.wait_for(has_room)
                    waiting += batch.prepared.retained
                queue.put_nowait(batch)
            queue.put_nowait(_DONE)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            queue.put_nowait(exc)
        finally:
            await pages.aclose()  # type: ignore[attr-defined]

    producer = asyncio.create_task(produce())
    try:
        ended: Any = None
        while ended is None:
            item = await queue.get()
            if item is _DONE or isinstance(item, BaseException):
                ended = item
                break
            waiting_batches = [item]
            size = item.prepared.retained
            while size < batch_records and not queue.empty():
                item = queue.get_nowait()
                if item is _DONE or isinstance(item, BaseException):
                    ended = item
                    break
                waiting_batches.append(item)
                size += item.prepared.retained
            async with room:
                waiting -= size
                room.notify_all()
            yield Batch.merged(waiting_batches)
        if isinstance(ended, BaseException):
            raise ended
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
