"""Fetching ahead of the loader: bounded by records, merged into batches, prepared on arrival."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pipeline.extract.paginators import Page
from pipeline.load import Candidate, PreparedBatch
from pipeline.run.ahead import overlapped


def _prepare(records: list[Any]) -> PreparedBatch:
    page = PreparedBatch(read=len(records))
    for record in records:
        page.offer(record, Candidate({"id": record}, None, b"", b""))
    return page


async def test_pages_waiting_are_merged_and_their_prepared_work_too() -> None:
    produced: list[int] = []

    async def pages() -> AsyncIterator[Page]:
        for number in range(1, 7):
            produced.append(number)
            yield Page(list(range(number * 10, number * 10 + 10)), number)

    batches = []
    async for batch in overlapped(pages(), _prepare, ahead_records=1000, batch_records=30):
        await asyncio.sleep(0.01)  # a slow loader: the producer runs ahead meanwhile
        batches.append(batch)

    assert any(len(b.numbers) > 1 for b in batches)  # pages that waited were merged
    assert all(b.prepared.retained <= 30 for b in batches)
    assert [n for b in batches for n in b.numbers] == [1, 2, 3, 4, 5, 6]
    for batch in batches:
        expected = [r for n in batch.numbers for r in range(n * 10, n * 10 + 10)]
        assert list(batch.prepared.candidates) == expected
        assert batch.prepared.read == len(expected)


async def test_the_producer_stops_at_the_look_ahead_bound() -> None:
    produced: list[int] = []

    async def pages() -> AsyncIterator[Page]:
        for number in range(1, 100):
            produced.append(number)
            yield Page(list(range(10)), number)

    batches = overlapped(pages(), _prepare, ahead_records=25, batch_records=10)
    first = await anext(batches)
    await asyncio.sleep(0.05)  # the loader is busy; the producer fills what room there is

    assert first.numbers == (1,)
    # page 1 taken; at most 25 records (3 pages, the last one admitted below the bound) wait,
    # plus the page the producer holds while it waits for room
    assert len(produced) <= 1 + 3 + 1
    await batches.aclose()  # type: ignore[attr-defined]
