"""Writes of a full scan held across batches (`pipeline.load.held`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.load import Batch, TableWriter
from pipeline.load.held import HeldWrites
from pipeline.metrics import Metrics
from tests.helpers import live_rows
from tests.integration.test_load import authority, writer  # noqa: F401 - the fixture


def page(number: int, loader: TableWriter, *records: dict) -> Batch:  # type: ignore[type-arg]
    return Batch((number,), loader.prepare(list(records)))


async def test_held_writes_are_released_as_one_batch_with_every_count(
    engine: AsyncEngine,
    writer: TableWriter,  # noqa: F811
) -> None:
    def same(i: int) -> dict:  # type: ignore[type-arg]
        return authority(i, f"A{i}", "2024-05-01T00:00:00Z")

    await writer.write(writer.prepare([same(i) for i in range(1, 13)]))
    await writer.start_scan()
    held = HeldWrites(writer.prepare, records=4, seconds=60)

    assert not held.take(page(1, writer, same(1)))  # nothing to write: nothing to hold
    assert held.take(page(2, writer, authority(2, "B2", "2024-05-02T00:00:00Z"), same(3), same(4)))
    new = authority(99, "New", "2024-05-03T00:00:00Z")
    assert held.take(page(3, writer, {"name": "no id"}, new, same(5), same(6), same(7)))
    assert not held.due()
    changed = [authority(i, f"C{i}", "2024-05-04T00:00:00Z") for i in (10, 11, 12, 13)]
    assert not held.take(page(4, writer, *changed))  # mostly writes: they go as they come
    again = authority(2, "B2 again", "2024-05-05T00:00:00Z")
    assert held.take(page(5, writer, again, same(8), same(1)))
    assert held.due()

    batch = held.release()
    assert not held and batch.numbers == (2, 3, 5)
    result = await writer.write(batch.prepared)

    assert (result.read, result.unchanged, result.quarantined) == (11, 7, 1)
    assert (result.inserted, result.updated) == (1, 1)  # 99 new; 2 changed, to its newer version
    rows = await live_rows(engine, "valomnia.authorities")
    assert rows[2]["name"] == "B2 again" and rows[99]["name"] == "New"


async def test_the_held_gauge_counts_what_waits_and_drops_to_zero_when_discarded(
    writer: TableWriter,  # noqa: F811
) -> None:
    m = Metrics()
    labels = {"stream": "valomnia.authorities", "source": "valomnia"}
    gauge = m.held_rows(*labels.values())
    same = [authority(i, f"A{i}", "2024-05-01T00:00:00Z") for i in range(1, 9)]
    await writer.write(writer.prepare(same))
    await writer.start_scan()
    held = HeldWrites(writer.prepare, records=100, seconds=60, gauge=gauge)

    changed = authority(2, "B2", "2024-05-02T00:00:00Z")
    assert held.take(page(1, writer, changed, *same[2:5]))
    assert held.take(page(2, writer, {"name": "no id"}, *same[5:8]))
    assert m.registry.get_sample_value("pipeline_held_rows", labels) == 2  # a write, a reject

    held.discard()  # the scan failed: the next one finds them again
    assert not held and m.registry.get_sample_value("pipeline_held_rows", labels) == 0
