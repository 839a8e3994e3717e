"""Writes of a full scan held across batches (`pipeline.held`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.held import HeldWrites
from pipeline.load import TableWriter
from pipeline.paginators import Page
from tests.helpers import live_rows
from tests.integration.test_load import authority, writer  # noqa: F401 - the fixture


def page(number: int, writer: TableWriter, *records: dict) -> Page:  # type: ignore[type-arg]
    result = Page(list(records), number)
    result.prepared = writer.prepare_page(result.records)
    return result


async def test_held_writes_are_released_as_one_batch_with_every_count(
    engine: AsyncEngine,
    writer: TableWriter,  # noqa: F811
) -> None:
    await writer.write_page([authority(i, f"A{i}", "2024-05-01T00:00:00Z") for i in range(1, 7)])
    await writer.start_scan()
    held = HeldWrites(writer, records=4, seconds=60)

    quiet = page(1, writer, authority(1, "A1", "2024-05-01T00:00:00Z"))
    assert not held.take(quiet)  # nothing to write: nothing to hold
    assert held.take(
        page(
            2,
            writer,
            authority(2, "B2", "2024-05-02T00:00:00Z"),
            authority(3, "A3", "2024-05-01T00:00:00Z"),
        )
    )
    assert held.take(
        page(3, writer, {"name": "no id"}, authority(9, "New", "2024-05-03T00:00:00Z"))
    )
    assert not held.due()
    assert not held.take(
        page(4, writer, *(authority(i, f"C{i}", "2024-05-04T00:00:00Z") for i in (4, 5, 6, 10)))
    )  # a batch's worth already: written on its own
    assert held.take(page(5, writer, authority(2, "B2 again", "2024-05-05T00:00:00Z")))
    assert held.due()

    batch = held.release()
    assert not held and batch.numbers == (2, 3, 5)
    result = await writer.write_page(batch.prepared)

    assert (result.read, result.unchanged, result.quarantined) == (5, 1, 1)
    assert (result.inserted, result.updated) == (1, 1)  # 9 new; 2 changed, to its newer version
    rows = await live_rows(engine, "valomnia.authorities")
    assert rows[2]["name"] == "B2 again" and rows[9]["name"] == "New"
