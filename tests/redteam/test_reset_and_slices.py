"""The class "reset": a name matching streams of several instances crashed; a reset while a run
held the lock reported success and was then undone by the run; sliced backfill checkpoints
survived it; and a sliced backfill without `--until` never resumed its last slice (its window
ended at a "now" that had moved on)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import exits, statekeys
from pipeline.db import plain_url
from pipeline.run import Mode, Runner
from pipeline.run.slices import finished, planned_slices
from pipeline.run.stream_run import StreamOutcome
from pipeline.sandbox import RunningSimulator
from pipeline.targets import select_streams
from tests.helpers import execute, instance_settings, rows, run_cli
from tests.redteam.cli import soho_config

KEY = "soho.customers"


@pytest.fixture
def config(tmp_path: Path, on_test_database: str, soho: RunningSimulator) -> Path:
    other = {"type": "soho", "base_url": f"{soho.url}/api/v1", "token": "b" * 32}
    return soho_config(tmp_path, soho, more={"sources.soho_b": other})


async def _keys(engine: AsyncEngine) -> set[str]:
    return {r.stream for r in await rows(engine, "SELECT stream FROM pipeline.stream_state")}


async def _seed(engine: AsyncEngine, keys: list[str]) -> None:
    for key in keys:
        await execute(
            engine,
            "INSERT INTO pipeline.stream_state (stream, checkpoint) VALUES (:k, '{}'::jsonb)",
            k=key,
        )


async def test_reset_forgets_every_checkpoint_of_the_stream_and_nothing_else(
    engine: AsyncEngine, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    window = "2024-01-01T00:00:00+00:00..2024-02-01T00:00:00+00:00"
    mine = [
        KEY,
        f"{KEY}#backfill",
        f"{KEY}#backfill@{window}",
        f"{KEY}#backfill-plan",
        f"{KEY}#rederive",
    ]
    kept = [f"{KEY}#indexes", "soho_b.customers", "soho_b.customers#backfill", "sohoXcustomers#x"]
    await _seed(engine, mine + kept)
    assert await run_cli("--config", str(config), "reset", KEY, "--yes") == exits.OK
    assert await _keys(engine) == set(kept)
    assert "#backfill@" in capsys.readouterr().out


async def test_reset_of_a_name_several_instances_share_asks_for_one(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("--config", str(config), "reset", "customers", "--yes") == exits.USAGE
    err = capsys.readouterr().err
    assert "soho.customers" in err and "soho_b.customers" in err and "Traceback" not in err


async def test_reset_while_a_run_holds_the_lock_is_refused_and_forgets_nothing(
    engine: AsyncEngine, database_url: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(engine, [KEY, f"{KEY}#backfill"])
    holder = await asyncpg.connect(plain_url(database_url))
    try:
        await holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('pipeline.stream:' || $1, 0))", KEY
        )
        assert await run_cli("--config", str(config), "reset", KEY, "--yes") == exits.SKIPPED
    finally:
        await holder.close()
    assert "in progress" in capsys.readouterr().out
    assert await _keys(engine) == {KEY, f"{KEY}#backfill"}


async def test_a_sliced_backfill_without_until_resumes_the_same_slices(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = instance_settings({"soho": soho})
    targets = select_streams(settings, [KEY])
    mode = Mode("backfill", since=datetime.now(UTC) - timedelta(days=30))
    first = await planned_slices(engine, targets, mode, 4)
    await asyncio.sleep(0.05)  # "now" moves on, as it does between a crash and the re-run
    again = await planned_slices(engine, targets, mode, 4)
    assert [m.window for m in again] == [m.window for m in first]
    last = first[-1]
    assert str(statekeys.backfill(KEY, again[-1].window)) == str(
        statekeys.backfill(KEY, last.window)
    )  # the last slice finds its own checkpoint
    other = await planned_slices(engine, targets, mode, 3)  # another request: cut afresh
    assert len(other) == 3
    await finished(engine, targets, [StreamOutcome(KEY, "succeeded")])
    assert f"{KEY}#backfill-plan" not in await _keys(engine)


async def test_the_slices_of_a_backfill_log_in_once_and_all_run(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    """`--slices` logged in to Valomnia once per slice; the slices now share one client (and
    session) per source, and each slice's run is recorded."""
    settings = instance_settings({"valomnia": valomnia})
    targets = select_streams(settings, ["valomnia.authorities"])
    mode = Mode("backfill", since=datetime(2000, 1, 1, tzinfo=UTC))
    modes = await planned_slices(engine, targets, mode, 6)
    outcomes = await Runner(engine, mode=mode).run_each(targets, modes)
    assert [o.status for o in outcomes] == ["succeeded"] * 6, [o.error for o in outcomes]
    logins = [r for r in valomnia.sim.requests if r.path.endswith("j_spring_security_check")]
    assert len(logins) == 1
    runs = await rows(engine, "SELECT run_id, status FROM pipeline.sync_runs")
    assert len({r.run_id for r in runs}) == 6 and {r.status for r in runs} == {"succeeded"}
