"""The loader on its own: the cursor guard, duplicates on a page, revival, one transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.extract.rawjson import loads_keeping_records
from pipeline.load import Commit, PageResult, PreparedBatch, TableWriter
from pipeline.sources import SOURCES
from tests.helpers import live_rows, rows, scalar

SOURCE = SOURCES["valomnia"]
STREAM = SOURCE.stream("authorities")


async def write(writer: TableWriter, records: Any, commit: Commit | None = None) -> PageResult:
    """Records through the pure stage, then written (with `commit`, in one transaction)."""
    batch = records if isinstance(records, PreparedBatch) else writer.prepare(records)
    return await writer.write(batch, commit)


@dataclass(frozen=True)
class _FailingCommit(Commit):
    async def apply(self, conn: asyncpg.Connection, result: PageResult) -> None:
        await conn.execute("SELECT 1/0")


def authority(id_: int, name: str, updated: str) -> dict[str, Any]:
    return {"id": id_, "name": name, "dateCreated": "2024-01-01T00:00:00Z", "lastUpdated": updated}


@pytest.fixture
async def writer(engine: AsyncEngine) -> AsyncIterator[TableWriter]:
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        assert STREAM is not None
        table_writer = TableWriter(raw.driver_connection, SOURCE, STREAM, uuid.uuid4())  # type: ignore[arg-type]
        await table_writer.set_up()
        yield table_writer


async def test_an_old_version_replayed_never_overwrites_a_newer_one(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    newer = authority(1, "Manager (renamed)", "2024-05-02T10:00:00Z")
    older = authority(1, "Manager", "2024-05-01T10:00:00Z")

    first = await write(writer, [newer])
    replay = await write(writer, [older])

    assert (first.inserted, replay.updated, replay.unchanged) == (1, 0, 1)
    assert (await live_rows(engine, "valomnia.authorities"))[1] == newer


async def test_same_second_different_content_is_an_update(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    await write(writer, [authority(2, "Driver", "2024-05-01T10:00:00Z")])
    result = await write(writer, [authority(2, "Lead driver", "2024-05-01T10:00:00Z")])
    assert result.updated == 1
    assert (await live_rows(engine, "valomnia.authorities"))[2]["name"] == "Lead driver"


async def test_a_key_twice_on_one_page_keeps_the_newer(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    result = await write(
        writer,
        [
            authority(3, "B", "2024-05-02T00:00:00Z"),
            authority(3, "A", "2024-05-01T00:00:00Z"),
        ],
    )
    assert (result.read, result.inserted) == (2, 1)
    assert (await live_rows(engine, "valomnia.authorities"))[3]["name"] == "B"


async def test_a_failing_checkpoint_rolls_back_the_whole_page(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    with pytest.raises(asyncpg.DivisionByZeroError):
        await write(
            writer,
            [authority(4, "X", "2024-05-01T00:00:00Z"), {"name": "no id"}],
            _FailingCommit(uuid.uuid4()),
        )
    assert await scalar(engine, "SELECT count(*) FROM valomnia.authorities") == 0
    assert await scalar(engine, "SELECT count(*) FROM pipeline.quarantine") == 0


async def test_pages_prepared_apart_then_merged_keep_the_newer_version(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    """The runner hashes pages as they arrive and merges them into one batch: a key on two
    pages of the batch still ends as its newer version, whatever the page order."""
    first = writer.prepare([authority(5, "New", "2024-05-03T00:00:00Z")])
    second = writer.prepare(
        [authority(5, "Old", "2024-05-01T00:00:00Z"), authority(6, "Other", "2024-05-01T00:00:00Z")]
    )

    result = await write(writer, PreparedBatch.merged([first, second]))

    assert (result.read, result.inserted) == (3, 2)
    rows = await live_rows(engine, "valomnia.authorities")
    assert rows[5]["name"] == "New" and rows[6]["name"] == "Other"


async def test_a_first_load_writes_a_key_seen_twice_once_and_keeps_the_newer(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    """On an empty table the loader skips looking keys up; the same record on two batches
    (a list that moved under the scan) must still end as one row, the newer version."""
    await writer.start_scan()
    await write(writer, [authority(7, "New", "2024-05-03T00:00:00Z")])
    again = await write(
        writer,
        [
            authority(7, "Old", "2024-05-01T00:00:00Z"),
            authority(8, "Other", "2024-05-01T00:00:00Z"),
        ],
    )
    newest = await write(writer, [authority(8, "Other, renamed", "2024-05-04T00:00:00Z")])

    assert (again.inserted, again.unchanged) == (1, 1)
    assert newest.updated == 1
    rows = await live_rows(engine, "valomnia.authorities")
    assert (rows[7]["name"], rows[8]["name"]) == ("New", "Other, renamed")
    assert await writer.absences.record([]) == 0


async def test_after_a_first_load_the_next_scan_judges_absences_again(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    await writer.start_scan()
    await write(writer, [authority(i, f"A{i}", "2024-05-01T00:00:00Z") for i in (10, 11)])
    assert await writer.absences.candidates(10) == []

    await writer.start_scan()  # the table is not empty now: keys are looked up and noted
    result = await write(writer, [authority(10, "A10", "2024-05-01T00:00:00Z")])

    assert (result.inserted, result.unchanged) == (0, 1)
    assert await writer.absences.candidates(10) == [11]


async def seen_in_database(writer: TableWriter) -> int:
    return int(await writer.conn.fetchval(f"SELECT count(*) FROM {writer.sql.seen}"))


async def test_a_full_scan_judges_unchanged_records_in_memory(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    """The stored hashes are read once when the scan begins: unchanged records cost the
    database nothing, a changed one is still written, and what was not sent is absent."""
    await write(writer, [authority(i, f"A{i}", "2024-05-01T00:00:00Z") for i in (20, 21, 22)])
    await writer.start_scan()

    quiet = await write(writer, [authority(20, "A20", "2024-05-01T00:00:00Z")])
    assert (quiet.unchanged, quiet.max_cursor.day) == (1, 1)  # type: ignore[union-attr]
    assert await seen_in_database(writer) == 0  # nothing was asked about
    changed = await write(writer, [authority(21, "A21 renamed", "2024-05-02T00:00:00Z")])
    assert changed.updated == 1

    assert await writer.absences.candidates(10) == [22]
    assert await writer.absences.record([]) == 0
    assert await scalar(engine, "SELECT _absent_scans FROM valomnia.authorities WHERE id = 22") == 1


async def test_a_row_back_after_an_absence_is_written_though_unchanged(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    await write(writer, [authority(30, "A30", "2024-05-01T00:00:00Z")])
    await writer.conn.execute("UPDATE valomnia.authorities SET _absent_scans = 1 WHERE id = 30")
    await writer.start_scan()

    result = await write(writer, [authority(30, "A30", "2024-05-01T00:00:00Z")])

    assert result.updated == 1
    assert await scalar(engine, "SELECT _absent_scans FROM valomnia.authorities WHERE id = 30") == 0
    assert await writer.absences.candidates(10) == []


async def test_a_table_too_large_to_hold_is_asked_per_batch(
    engine: AsyncEngine, writer: TableWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pipeline.load.stored.MAX_ROWS", 1)
    await write(writer, [authority(i, f"A{i}", "2024-05-01T00:00:00Z") for i in (40, 41)])
    await writer.conn.execute("ANALYZE valomnia.authorities")
    await writer.start_scan()

    result = await write(writer, [authority(40, "A40", "2024-05-01T00:00:00Z")])

    assert result.unchanged == 1
    assert await seen_in_database(writer) == 1  # asked, and noted as seen there
    assert await writer.absences.candidates(10) == [41]


async def test_the_same_record_under_another_partition_is_a_change(engine: AsyncEngine) -> None:
    """A record's hash covers the values it gets from outside (here its price group), so equal
    content read under another group is not taken for the stored row."""
    source = SOURCES["afosto"]
    prices = source.stream("prices")
    assert prices is not None
    price = {
        "id": "p1",
        "sku": "SKU-1",
        "amount": 995,
        "original_amount": 995,
        "active_at": "2024-05-01T00:00:00Z",
        "created_at": "2024-05-01T00:00:00Z",
        "vat": [],
    }
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        writer = TableWriter(raw.driver_connection, source, prices, uuid.uuid4())  # type: ignore[arg-type]
        await writer.set_up()
        await writer.start_scan(partition=("price_group_id", "g1"))
        assert (await write(writer, [price])).inserted == 1
        await writer.start_scan(partition=("price_group_id", "g1"))
        assert (await write(writer, [price])).unchanged == 1
        await writer.start_scan(partition=("price_group_id", "g2"))
        assert (await write(writer, [price])).updated == 1
    assert await scalar(engine, "SELECT price_group_id FROM afosto.prices") == "g2"


def sent(body: bytes) -> list[Any]:
    """A bare list body's records as a raw-record stream receives them (`pipeline.extract.rawjson`)."""
    return loads_keeping_records(body, ())  # type: ignore[no-any-return]


async def test_records_that_come_raw_are_stored_and_judged_by_the_bytes_sent(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    spaced = b'[{"id": 50, "name": "A50", "dateCreated": "2024-01-01T00:00:00Z", "lastUpdated": "2024-05-01T00:00:00Z"}]'
    assert (await write(writer, sent(spaced))).inserted == 1
    assert (await live_rows(engine, "valomnia.authorities"))[50]["name"] == "A50"

    await writer.start_scan()
    quiet = await write(writer, sent(spaced))
    assert (quiet.unchanged, await seen_in_database(writer)) == (1, 0)  # judged in memory
    # Bytes as orjson writes them hash as a parsed record does (a detail probe's, say).
    compact = orjson.dumps([authority(51, "A51", "2024-05-01T00:00:00Z")])
    await write(writer, sent(compact))
    await writer.start_scan()
    assert (await write(writer, [authority(51, "A51", "2024-05-01T00:00:00Z")])).unchanged == 1


async def test_a_raw_record_that_is_not_text_is_quarantined_and_the_rest_written(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    body = (
        b'[{"id": 60, "name": "\xff", "dateCreated": "2024-01-01T00:00:00Z", "lastUpdated": "2024-05-01T00:00:00Z"},'
        + orjson.dumps(authority(61, "A61", "2024-05-01T00:00:00Z"))
        + b"]"
    )
    await writer.start_scan()
    result = await write(writer, sent(body))
    assert (result.inserted, result.quarantined) == (1, 1)
    reason, raw = (await rows(engine, "SELECT reason, raw FROM pipeline.quarantine"))[0]
    assert reason.startswith("not valid JSON") and raw.startswith('{"id": 60')
    assert set(await live_rows(engine, "valomnia.authorities")) == {61}


async def index_names(writer: TableWriter) -> set[str]:
    rows = await writer.conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'valomnia' "
        "AND tablename = 'authorities'"
    )
    return {r["indexname"] for r in rows}


async def test_a_first_load_builds_its_secondary_indexes_at_the_end(writer: TableWriter) -> None:
    before = await index_names(writer)
    assert "authorities_last_updated" in before

    await writer.start_scan()  # an empty table: the secondary index goes, the key stays
    assert await index_names(writer) == before - {"authorities_last_updated"}
    await write(writer, [authority(1, "A1", "2024-05-01T00:00:00Z")])
    await writer.finish_load()

    assert await index_names(writer) == before
    await writer.start_scan()  # not a first load any more: nothing is dropped
    assert await index_names(writer) == before


async def test_indexes_a_crashed_first_load_dropped_come_back_on_the_next_run(
    engine: AsyncEngine, writer: TableWriter
) -> None:
    before = await index_names(writer)
    await writer.start_scan()
    await write(writer, [authority(1, "A1", "2024-05-01T00:00:00Z")])
    # the process dies here; the next run's writer is a new one
    again = TableWriter(writer.conn, SOURCE, STREAM, uuid.uuid4())  # type: ignore[arg-type]
    await again.finish_load()
    assert await index_names(writer) == before
    await again.finish_load()  # nothing left to do
    assert await index_names(writer) == before
