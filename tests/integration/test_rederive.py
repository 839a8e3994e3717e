"""`pipeline rederive`: stored rows retyped from their `data` column, with no API call."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.cli import main
from pipeline.run import Mode, Runner
from pipeline.sandbox import AfostoSimulator, DigiLockerSimulator, RunningSimulator, serve
from pipeline.sources import SOURCES
from pipeline.streams import TEXT, Column
from pipeline.targets import select_streams
from tests.helpers import execute, make_settings, rows, scalar, sync

PARCELS = "afosto.parcels"


@pytest.fixture
async def afosto() -> AsyncIterator[RunningSimulator]:
    sim = AfostoSimulator(
        contacts=5, shipments=20, parcels=150, groups=3, prices_per_group=20, seed=43
    )
    async with serve(sim) as running:
        yield running


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)


def afosto_config(path: Path, afosto: RunningSimulator) -> str:
    sim: Any = afosto.sim
    path.write_text(
        f'[sources.afosto]\nbase_url = "{afosto.url}"\ntoken = "{sim.token}"\n', encoding="utf-8"
    )
    return str(path)


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def rederive(engine: AsyncEngine, settings: Any, name: str, **mode: Any) -> Any:
    [outcome] = await Runner(engine, mode=Mode("rederive", **mode)).run(
        select_streams(settings, [name])
    )
    return outcome


async def snapshot(engine: AsyncEngine, table: str, key: str = "id") -> dict[Any, dict[str, Any]]:
    """Every stored row, by key, without the columns that say which run wrote it when."""
    return {
        row._mapping[key]: {
            k: v for k, v in row._mapping.items() if k not in ("_synced_at", "_run_id")
        }
        for row in await rows(engine, f"SELECT * FROM {table}")
    }


async def child_rows(engine: AsyncEngine, table: str) -> list[tuple[Any, ...]]:
    """A child table's rows as the parent's key, position and the element's columns."""
    schema, name = table.split(".")
    columns = [
        r.column_name
        for r in await rows(
            engine,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = :s "
            "AND table_name = :t AND column_name <> '_source' ORDER BY ordinal_position",
            s=schema,
            t=name,
        )
    ]
    listed = ", ".join(columns)
    return [tuple(r) for r in await rows(engine, f"SELECT {listed} FROM {table} ORDER BY 1, 2")]


async def items_from_data(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    """afosto.parcel_items as the parcels' stored `data` says it must be."""
    out = []
    for parcel in await rows(engine, "SELECT id, data FROM afosto.parcels ORDER BY id"):
        for position, item in enumerate(parcel.data.get("items") or []):
            out.append(
                (
                    parcel.id,
                    position,
                    item.get("id"),
                    item.get("sku"),
                    item.get("quantity"),
                    item.get("description"),
                )
            )
    return sorted(out)


def declare(monkeypatch: pytest.MonkeyPatch, source: str, stream: str, column: Column) -> None:
    """What a release that adds a column does to the declarations: the stream gets it."""
    spec = SOURCES[source]
    streams = tuple(
        replace(s, columns=(*s.columns, column)) if s.name == stream else s for s in spec.streams
    )
    monkeypatch.setitem(SOURCES, source, replace(spec, streams=streams))


@pytest.mark.usefixtures("cli_env")
async def test_rederive_fills_a_column_a_migration_added_and_rebuilds_child_tables_without_the_api(
    engine: AsyncEngine,
    afosto: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim: Any = afosto.sim
    await sync(engine, make_settings(afosto=afosto), PARCELS)
    hashes = {r.id: r._hash for r in await rows(engine, "SELECT id, _hash FROM afosto.parcels")}
    # A later release: a migration adds the label's text, the declaration reads it from the
    # record; and the child rows were damaged meanwhile.
    await execute(engine, "ALTER TABLE afosto.parcels ADD COLUMN label_text text")
    declare(monkeypatch, "afosto", "parcels", Column("label_text", TEXT, path="label.label_text"))
    await execute(engine, "DELETE FROM afosto.parcel_items WHERE position > 0")
    await execute(engine, "UPDATE afosto.parcel_items SET quantity = -1, sku = NULL")
    await execute(
        engine,
        "UPDATE afosto.parcels SET _deleted_at = now() WHERE id = (SELECT min(id) FROM afosto.parcels)",
    )
    sim.clear_requests()

    config = afosto_config(tmp_path / "pipeline.toml", afosto)
    code = await run_cli("--config", config, "rederive", "parcels", "--batch-size", "40")

    assert code == 0, capsys.readouterr()
    assert sim.requests == []  # not one API call
    stored = await rows(engine, "SELECT id, label_text, data, _hash FROM afosto.parcels")
    assert len(stored) == 150
    for row in stored:  # deleted rows too: every stored row is retyped
        assert row.label_text == row.data["label"]["label_text"], row.id
        assert row._hash == hashes[row.id]  # the source's content did not change
    assert await child_rows(engine, "afosto.parcel_items") == await items_from_data(engine)
    [run] = await rows(engine, "SELECT * FROM pipeline.sync_runs WHERE kind = 'rederive'")
    assert (run.status, run.records_read, run.updated, run.pages) == ("succeeded", 150, 150, 4)
    assert (run.inserted, run.quarantined) == (0, 0)
    assert "rederive parcels" in capsys.readouterr().out
    assert (
        await scalar(
            engine, "SELECT count(*) FROM pipeline.stream_state WHERE stream LIKE '%#rederive'"
        )
        == 0
    )

    # What a sync with the new declaration writes from the same records, is what was rederived.
    rederived = await snapshot(engine, PARCELS)
    items = await child_rows(engine, "afosto.parcel_items")
    await execute(engine, "DELETE FROM afosto.parcel_items")
    await execute(engine, "DELETE FROM afosto.parcels")
    await sync(engine, make_settings(afosto=afosto), PARCELS)
    synced = await snapshot(engine, PARCELS)
    for row in rederived.values():
        row["_deleted_at"] = None
    assert synced == rederived
    assert await child_rows(engine, "afosto.parcel_items") == items


@pytest.mark.usefixtures("cli_env")
async def test_rederive_since_until_narrows_it_to_the_stored_change_times(
    engine: AsyncEngine, afosto: RunningSimulator, tmp_path: Path
) -> None:
    await sync(engine, make_settings(afosto=afosto), PARCELS)
    expected = await snapshot(engine, PARCELS)
    cursors = [
        r.c for r in await rows(engine, "SELECT _cursor AS c FROM afosto.parcels ORDER BY 1")
    ]
    since, until = cursors[40], cursors[99]
    inside = {
        r.id
        for r in await rows(
            engine,
            "SELECT id FROM afosto.parcels WHERE _cursor BETWEEN :s AND :u",
            s=since,
            u=until,
        )
    }
    await execute(engine, "UPDATE afosto.parcels SET weight = NULL, number = 'damaged'")

    config = afosto_config(tmp_path / "pipeline.toml", afosto)
    window = ["--since", since.isoformat(), "--until", until.isoformat()]
    assert await run_cli("--config", config, "rederive", "parcels", *window) == 0

    stored = await snapshot(engine, PARCELS)
    for id_, row in stored.items():
        if id_ in inside:
            assert row == expected[id_]
        else:
            assert (row["weight"], row["number"]) == (None, "damaged")
    assert await scalar(
        engine, "SELECT updated FROM pipeline.sync_runs WHERE kind = 'rederive'"
    ) == len(inside)


async def test_a_rederive_killed_mid_way_resumes_from_its_checkpoint(
    engine: AsyncEngine, afosto: RunningSimulator, database_url: str, tmp_path: Path
) -> None:
    await sync(engine, make_settings(afosto=afosto), PARCELS)
    expected = await snapshot(engine, PARCELS)
    expected_items = await child_rows(engine, "afosto.parcel_items")
    await execute(engine, "UPDATE afosto.parcels SET weight = NULL, number = 'damaged'")
    await execute(engine, "DELETE FROM afosto.parcel_items")
    # Slow the rewrite down (5 ms a row) so the kill lands between batches of a real process.
    await execute(
        engine,
        "CREATE FUNCTION public.slow_down() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$",
    )
    await execute(
        engine,
        "CREATE TRIGGER slow_down BEFORE UPDATE ON afosto.parcels "
        "FOR EACH ROW EXECUTE FUNCTION public.slow_down()",
    )
    config = afosto_config(tmp_path / "pipeline.toml", afosto)
    args = ("-m", "pipeline", "--config", config, "rederive", "parcels", "--batch-size", "10")
    env = {**os.environ, "DATABASE_URL": database_url}
    checkpoint_sql = (
        "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'afosto.parcels#rederive'"
    )

    first = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    for _ in range(2000):
        if await scalar(engine, checkpoint_sql):
            break
        await asyncio.sleep(0.01)
    first.kill()
    await first.wait()
    checkpoint = await scalar(engine, checkpoint_sql)
    assert checkpoint and checkpoint["table"] == "parcels", checkpoint
    done = await scalar(
        engine, "SELECT count(*) FROM afosto.parcels WHERE id <= :a", a=checkpoint["after"]
    )
    assert 0 < done < 150
    first_run = await scalar(
        engine, "SELECT run_id FROM pipeline.sync_runs WHERE kind = 'rederive'"
    )
    await execute(engine, "DROP TRIGGER slow_down ON afosto.parcels")

    second = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await second.communicate()
    assert second.returncode == 0, stderr.decode()[-1500:]

    assert await snapshot(engine, PARCELS) == expected
    assert await child_rows(engine, "afosto.parcel_items") == expected_items
    runs = await rows(
        engine,
        "SELECT run_id, status, records_read FROM pipeline.sync_runs WHERE kind = 'rederive' ORDER BY id",
    )
    assert [r.status for r in runs] == ["interrupted", "succeeded"]
    assert runs[1].records_read == 150 - done  # it went on after the checkpoint, not again
    by_run = await rows(
        engine,
        "SELECT (id <= :a) AS before, array_agg(DISTINCT _run_id) AS runs FROM afosto.parcels GROUP BY 1",
        a=checkpoint["after"],
    )
    assert {r.before: r.runs for r in by_run} == {True: [first_run], False: [runs[1].run_id]}
    assert await scalar(engine, checkpoint_sql) is None


@pytest.fixture
async def digilocker() -> AsyncIterator[RunningSimulator]:
    async with serve(DigiLockerSimulator(issuers=6, seed=47)) as running:
        yield running


async def test_columns_from_outside_the_record_keep_their_stored_values(
    engine: AsyncEngine, afosto: RunningSimulator, digilocker: RunningSimulator
) -> None:
    """Partition columns (a price's group, a document type's issuer) and derived ones (the day
    statistics were read) are not in the record: a rederive must not recompute them today."""
    settings = make_settings(afosto=afosto, digilocker=digilocker)
    read_on = datetime(2024, 3, 5, 12, tzinfo=UTC)
    await sync(engine, settings, "afosto.prices", "digilocker.doctypes", clock=lambda: read_on)
    await sync(engine, settings, "digilocker.statistics", clock=lambda: read_on)
    tables = ("afosto.prices", "afosto.price_groups", "digilocker.doctypes")
    expected = {t: await snapshot(engine, t, "key" if "doctypes" in t else "id") for t in tables}
    expected_stats = await snapshot(engine, "digilocker.statistics", "read_on")
    expected_vat = await child_rows(engine, "afosto.price_vat")
    # A record that says another group than the one it was read under keeps its stored group.
    moved = await scalar(engine, "SELECT min(id) FROM afosto.prices")
    await execute(
        engine,
        'UPDATE afosto.prices SET data = data || \'{"price_group_id": "elsewhere"}\' WHERE id = :i',
        i=moved,
    )
    expected["afosto.prices"][moved]["data"]["price_group_id"] = "elsewhere"
    await execute(engine, "UPDATE afosto.prices SET amount = -1")
    await execute(engine, "UPDATE afosto.price_groups SET name = 'damaged'")
    await execute(engine, "DELETE FROM afosto.price_vat WHERE position = 0")
    await execute(engine, "UPDATE digilocker.doctypes SET description = NULL")
    await execute(engine, "UPDATE digilocker.statistics SET users = NULL")

    for name in ("afosto.prices", "digilocker.doctypes", "digilocker.statistics"):
        outcome = await rederive(engine, settings, name)
        assert outcome.status == "succeeded", outcome.error

    for table in tables:
        assert (
            await snapshot(engine, table, "key" if "doctypes" in table else "id") == expected[table]
        )
    assert await snapshot(engine, "digilocker.statistics", "read_on") == expected_stats
    assert list(expected_stats) == [date(2024, 3, 5)]
    assert await child_rows(engine, "afosto.price_vat") == expected_vat


async def test_a_record_that_no_longer_types_is_quarantined_and_its_row_kept(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    settings = make_settings(afosto=afosto)
    await sync(engine, settings, PARCELS)
    bad = await scalar(engine, "SELECT min(id) FROM afosto.parcels")
    await execute(
        engine,
        "UPDATE afosto.parcels SET data = jsonb_set(data, '{weight}', '\"heavy\"'), number = 'kept' WHERE id = :i",
        i=bad,
    )
    kept = (await snapshot(engine, PARCELS))[bad]
    await execute(engine, "UPDATE afosto.parcels SET number = 'damaged' WHERE id <> :i", i=bad)

    outcome = await rederive(engine, settings, PARCELS)

    assert outcome.status == "succeeded"
    assert (outcome.totals.updated, outcome.totals.quarantined) == (149, 1)
    assert (await snapshot(engine, PARCELS))[bad] == kept
    assert await scalar(engine, "SELECT count(*) FROM afosto.parcels WHERE number = 'damaged'") == 0
    [quarantined] = await rows(engine, "SELECT * FROM pipeline.quarantine")
    assert (quarantined.stream, quarantined.record_key) == (PARCELS, bad)
    assert "weight" in quarantined.reason and "heavy" in quarantined.raw
    [run] = await rows(
        engine, "SELECT run_id, quarantined FROM pipeline.sync_runs WHERE kind = 'rederive'"
    )
    assert (run.run_id, run.quarantined) == (quarantined.run_id, 1)


async def test_rederive_skips_a_stream_while_another_run_of_it_holds_its_lock(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    settings = make_settings(afosto=afosto)
    await sync(engine, settings, PARCELS)
    await execute(engine, "UPDATE afosto.parcels SET number = 'damaged'")
    async with engine.connect() as holder:  # a sync of the stream holds its lock
        await holder.exec_driver_sql(
            "SELECT pg_advisory_lock(hashtextextended('pipeline.stream:afosto.parcels', 0))"
        )
        outcome = await rederive(engine, settings, PARCELS)
        await holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
    assert outcome.status == "skipped"
    assert (
        await scalar(engine, "SELECT count(*) FROM afosto.parcels WHERE number <> 'damaged'") == 0
    )


@pytest.mark.usefixtures("cli_env")
async def test_rederive_refuses_a_window_on_a_stream_without_change_times(
    engine: AsyncEngine,
    afosto: RunningSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = afosto_config(tmp_path / "pipeline.toml", afosto)
    code = await run_cli("--config", config, "rederive", "prices", "--since", "2024-01-01")
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pipeline: cannot rederive afosto.prices:") and "--since" in err
    assert len(err.splitlines()) == 1
    assert await scalar(engine, "SELECT count(*) FROM pipeline.sync_runs") == 0
