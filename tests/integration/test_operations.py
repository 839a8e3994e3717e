"""Operations: the scheduler, backfills, reconcile, reset and status a data team runs nightly."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.exits import for_outcomes as exit_code
from pipeline.run import Mode, Runner
from pipeline.sandbox import HttpError, RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from pipeline.scheduler import StreamScheduler
from pipeline.targets import select_streams
from tests.helpers import execute, live_rows, make_settings, rows, scalar, sync
from tests.queue_procs import Processes, processes, until
from tests.source_limits import expect_config

AUTHORITIES = "valomnia.authorities"


async def run_mode(engine: AsyncEngine, settings: Any, name: str, mode: Mode) -> Any:
    [outcome] = await Runner(engine, mode=mode).run(select_streams(settings, [name]))
    return outcome


# ---- scheduler -------------------------------------------------------------------------------


async def test_the_scheduler_fires_a_stream_on_its_cron_and_stops_cleanly(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = make_settings(soho, streams={"soho.customers": {"schedule": "* * * * * *"}})
    stop = asyncio.Event()
    scheduler = StreamScheduler(settings, engine, stop)
    serving = asyncio.create_task(scheduler.serve(grace_seconds=5))
    for _ in range(200):
        done = await scalar(
            engine, "SELECT count(*) FROM pipeline.sync_runs WHERE status = 'succeeded'"
        )
        if done >= 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(serving, 10)

    runs = await rows(
        engine, "SELECT status, started_at, finished_at FROM pipeline.sync_runs ORDER BY id"
    )
    assert len([r for r in runs if r.status == "succeeded"]) >= 2
    assert all(r.status in ("succeeded", "interrupted") for r in runs)
    assert len(await live_rows(engine, "soho.customers")) == 120


def test_streams_read_by_value_get_a_weekly_reconcile_job() -> None:
    from pipeline.scheduler import DEFAULT_RECONCILE_SCHEDULE, StreamScheduler

    settings = make_settings_offline()
    plan = StreamScheduler(settings, None, asyncio.Event()).plan()  # type: ignore[arg-type]
    jobs = {(t.key, m.kind): schedule for t, m, schedule in plan}
    assert jobs[("valomnia.authorities", "reconcile")] == DEFAULT_RECONCILE_SCHEDULE
    assert ("soho.customers", "reconcile") not in jobs  # its full scan already sees deletions
    assert jobs[("soho.customers", "sync")] == "0 2 * * *"


def make_settings_offline() -> Any:
    from pipeline.config import settings_from_mapping
    from pipeline.sources import SOURCES

    sources = {
        "soho": {"base_url": "https://soho.example.com/api/v1", "token": "t" * 32},
        "valomnia": {"base_url": "https://v.example.com", "token": "static-token"},
    }
    return settings_from_mapping({"sources": sources}, {}, SOURCES)


async def test_two_scheduler_processes_never_run_one_stream_at_once(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    sim = SohoSimulator(customers=200, seed=81, latency=0.15)
    async with serve(sim) as soho:
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "{sim.token}"
max_concurrency = 1

[sources.soho.streams.customers]
schedule = "* * * * * *"
""",
            encoding="utf-8",
        )
        env = {"DATABASE_URL": database_url}
        expect_config(config, env, soho)
        async with processes(config, env, tmp_path) as procs:
            replicas = [await procs.start("schedule", "--grace", "5") for _ in range(2)]
            for replica in replicas:  # both serving before the window starts
                await until(
                    lambda r=replica: _said(procs, r, "job_scheduled"), what="a scheduler up"
                )
            await asyncio.sleep(6)
            for replica in replicas:
                replica.send_signal(signal.SIGTERM)
            for replica in replicas:
                await asyncio.wait_for(replica.wait(), 20)
            logs = "".join(procs.output(r) for r in replicas)

    assert [r.returncode for r in replicas] == [0, 0]
    assert "job_scheduled" in logs and "next_run" in logs
    assert "stream_locked_skipping" in logs  # the other replica held the stream
    runs = await rows(
        engine,
        "SELECT started_at, finished_at, status, error FROM pipeline.sync_runs ORDER BY started_at",
    )
    ran = [r for r in runs if r.status != "skipped"]
    assert len(ran) >= 2
    for earlier, later in itertools.pairwise(ran):
        assert earlier.finished_at is not None and earlier.finished_at <= later.started_at
    assert {r.status for r in ran} <= {"succeeded", "interrupted"}
    # Every skip is recorded, naming the run that held the stream.
    skips = [r for r in runs if r.status == "skipped"]
    assert skips and all("another run of this stream holds its lock" in r.error for r in skips), [
        r.error for r in skips
    ]


async def _said(procs: Processes, process: Any, text: str) -> bool:
    return text in procs.output(process)


# ---- backfill --------------------------------------------------------------------------------


async def test_a_backfill_reloads_exactly_its_window_and_keeps_the_watermark(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim: Any = valomnia.sim
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    watermark = await scalar(engine, "SELECT watermark FROM pipeline.stream_state")
    stamps = sorted({datetime.fromisoformat(a["lastUpdated"]) for a in sim.truth()})
    since, until = stamps[len(stamps) // 3], stamps[2 * len(stamps) // 3]
    inside = {
        a["id"] for a in sim.truth() if since <= datetime.fromisoformat(a["lastUpdated"]) <= until
    }
    await execute(engine, "DELETE FROM valomnia.authorities")  # the warehouse lost them
    sim.clear_requests()

    outcome = await run_mode(
        engine, settings, AUTHORITIES, Mode("backfill", since=since, until=until)
    )

    assert outcome.status == "succeeded", outcome.error
    assert set(await live_rows(engine, "valomnia.authorities")) == inside
    assert (
        await scalar(
            engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = :s", s=AUTHORITIES
        )
        == watermark
    )
    assert (
        await scalar(engine, "SELECT kind FROM pipeline.sync_runs ORDER BY id DESC LIMIT 1")
        == "backfill"
    )
    first = next(r for r in sim.requests if r.path.endswith("/authorities"))
    assert first.query["lastUpdated_gte"] == since.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first.query["lastUpdated_lte"] == until.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (
        await scalar(
            engine, "SELECT count(*) FROM pipeline.stream_state WHERE stream LIKE '%#backfill'"
        )
        == 0
    )


async def test_a_full_scan_backfill_filters_by_the_cursor_and_a_dry_run_writes_nothing(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    sim: Any = soho.sim
    settings = make_settings(soho)
    stamps = sorted(  # the customer's change time: the later of its own and its profile's
        max(
            datetime.fromisoformat(c["updated_at"]),
            datetime.fromisoformat(c["profile"]["updated_at"]),
        )
        for c in sim.truth()
    )
    since, until = stamps[30], stamps[59]

    dry = await run_mode(
        engine, settings, "customers", Mode("backfill", since=since, until=until, dry_run=True)
    )
    assert dry.status == "succeeded" and dry.totals.read == 30
    assert await scalar(engine, "SELECT count(*) FROM soho.customers") == 0

    outcome = await run_mode(
        engine, settings, "customers", Mode("backfill", since=since, until=until)
    )
    assert outcome.totals.inserted == 30
    assert (
        await scalar(
            engine, "SELECT count(*) FROM pipeline.stream_state WHERE stream = 'soho.customers'"
        )
        == 0
    )


async def test_a_backfill_killed_mid_way_resumes_from_its_checkpoint(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    sim = ValomniaSimulator(authorities=600, seed=82, latency=0.05)
    async with serve(sim) as valomnia:
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[sources.valomnia]
base_url = "{valomnia.url}"
username = "{sim.username}"
password = "{sim.password}"

[sources.valomnia.streams.authorities]
page_size = 20
""",
            encoding="utf-8",
        )
        env = {**os.environ, "DATABASE_URL": database_url}
        expect_config(config, env, valomnia)
        args = (
            "-m",
            "pipeline",
            "--config",
            str(config),
            "backfill",
            "authorities",
            "--since",
            "2000-01-01",
        )

        first = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        checkpoint = None
        for _ in range(1000):
            checkpoint = await scalar(
                engine,
                "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'valomnia.authorities#backfill'",
            )
            if (
                checkpoint
                and await scalar(engine, "SELECT count(*) FROM valomnia.authorities") >= 100
            ):
                break
            await asyncio.sleep(0.01)
        first.kill()
        await first.wait()
        checkpoint = await scalar(
            engine,
            "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'valomnia.authorities#backfill'",
        )
        assert checkpoint and checkpoint["position"], checkpoint
        sim.clear_requests()

        second = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await second.communicate()
        assert second.returncode == 0, stderr.decode()[-1500:]

    resumed_from = next(r for r in sim.requests if r.path.endswith("/authorities")).query[
        "lastUpdated_gte"
    ]
    assert resumed_from == datetime.fromisoformat(checkpoint["position"]).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert await live_rows(engine, "valomnia.authorities") == {a["id"]: a for a in sim.truth()}
    assert (
        await scalar(
            engine,
            "SELECT watermark FROM pipeline.stream_state WHERE stream = 'valomnia.authorities'",
        )
        is None
    )


@pytest.mark.parametrize(
    ("key", "column", "simulator"),
    [("soho.customers", "email", "soho"), (AUTHORITIES, "name", "valomnia")],
)
async def test_a_backfill_rewrites_every_row_of_its_window_though_the_source_did_not_change(
    engine: AsyncEngine,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    key: str,
    column: str,
    simulator: str,
) -> None:
    """A bad manual UPDATE leaves the source unchanged, so the stored hash still matches: a
    backfill must repair the rows anyway, except one whose stored change time is newer."""
    running = {"soho": soho, "valomnia": valomnia}[simulator]
    settings = make_settings(**{simulator: running})
    await sync(engine, settings)
    truth = {r["id"]: r for r in running.sim.truth()}  # type: ignore[attr-defined]
    cursors = [r.c for r in await rows(engine, f"SELECT _cursor AS c FROM {key} ORDER BY 1")]
    since, until = cursors[len(cursors) // 3], cursors[2 * len(cursors) // 3]
    inside = {
        r.id
        for r in await rows(
            engine, f"SELECT id FROM {key} WHERE _cursor BETWEEN :s AND :u", s=since, u=until
        )
    }
    altered = "altered by hand"
    await execute(
        engine,
        f"UPDATE {key} SET {column} = CAST(:v AS text), "
        f"data = data || jsonb_build_object('{column}', CAST(:v AS text))",
        v=altered,
    )
    newer = min(inside)  # its stored change time is later than the source's: it must stay
    await execute(
        engine, f"UPDATE {key} SET _cursor = _cursor + interval '1 day' WHERE id = :i", i=newer
    )

    outcome = await run_mode(engine, settings, key, Mode("backfill", since=since, until=until))

    assert outcome.status == "succeeded", outcome.error
    repaired = inside - {newer}
    assert outcome.totals.updated == len(repaired) and outcome.totals.inserted == 0
    assert outcome.totals.unchanged == 1
    [run] = await rows(
        engine, "SELECT updated, unchanged FROM pipeline.sync_runs WHERE kind = 'backfill'"
    )
    assert (run.updated, run.unchanged) == (len(repaired), 1)
    stored = {
        r.id: (getattr(r, column), r.data)
        for r in await rows(engine, f"SELECT id, {column}, data FROM {key}")
    }
    for id_, (value, data) in stored.items():
        if id_ in repaired:
            assert (value, data) == (truth[id_][column], truth[id_]), id_
        else:  # outside the window, or the newer row: untouched
            assert value == altered and data[column] == altered, id_


# ---- reconcile, reset ------------------------------------------------------------------------


async def test_reconcile_marks_a_deletion_and_unmarks_it_when_the_record_comes_back(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim: Any = valomnia.sim
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    victim = sim.truth()[17]
    sim.delete(victim["id"])
    quiet = (await sync(engine, settings))[AUTHORITIES]
    assert quiet.deleted == 0  # the incremental list cannot show a deletion

    reconciled = await run_mode(engine, settings, AUTHORITIES, Mode("reconcile"))
    assert reconciled.status == "succeeded" and reconciled.deleted == 1
    assert await scalar(
        engine, "SELECT _deleted_at FROM valomnia.authorities WHERE id = :i", i=victim["id"]
    )

    sim.restore(victim)
    back = await run_mode(engine, settings, AUTHORITIES, Mode("reconcile"))
    assert back.totals.updated == 1
    assert (
        await scalar(
            engine, "SELECT _deleted_at FROM valomnia.authorities WHERE id = :i", i=victim["id"]
        )
        is None
    )
    assert await live_rows(engine, "valomnia.authorities") == {a["id"]: a for a in sim.truth()}


async def test_reconcile_reloads_rows_missing_or_stale_in_the_table(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim: Any = valomnia.sim
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    await execute(
        engine,
        "DELETE FROM valomnia.authorities WHERE id IN (SELECT id FROM valomnia.authorities LIMIT 5)",
    )
    await execute(
        engine,
        "UPDATE valomnia.authorities SET data = data || '{\"name\": \"stale\"}', _hash = '\\x00' WHERE id IN (SELECT id FROM valomnia.authorities ORDER BY id DESC LIMIT 3)",
    )

    outcome = await run_mode(engine, settings, AUTHORITIES, Mode("reconcile"))

    assert (outcome.totals.inserted, outcome.totals.updated) == (5, 3)
    assert await live_rows(engine, "valomnia.authorities") == {a["id"]: a for a in sim.truth()}


async def test_reset_forgets_the_watermark(
    engine: AsyncEngine,
    valomnia: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    from pipeline.cli import main

    sim: Any = valomnia.sim
    await sync(engine, make_settings(valomnia=valomnia))
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[sources.valomnia]\nbase_url = "{valomnia.url}"\nusername = "{sim.username}"\npassword = "{sim.password}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert (
        await asyncio.to_thread(main, ["--config", str(config), "reset", "authorities"]) == 2
    )  # no TTY, no --yes
    assert await scalar(engine, "SELECT count(*) FROM pipeline.stream_state") == 1
    assert (
        await asyncio.to_thread(main, ["--config", str(config), "reset", "authorities", "--yes"])
        == 0
    )
    assert await scalar(engine, "SELECT count(*) FROM pipeline.stream_state") == 0
    sim.clear_requests()
    again = (await sync(engine, make_settings(valomnia=valomnia)))[AUTHORITIES]
    assert again.totals.read >= 230  # read from the start
    assert "lastUpdated_gte" not in sim.requests[-1].query or again.totals.read >= 230


# ---- status ----------------------------------------------------------------------------------


async def test_status_flags_stale_and_failed_streams_with_exit_code_1_and_json(
    engine: AsyncEngine,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipeline.cli import main

    settings = make_settings(soho, valomnia)
    await sync(engine, settings)
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "{soho.sim.token}"

[sources.valomnia]
base_url = "{valomnia.url}"
username = "{valomnia.sim.username}"
password = "{valomnia.sim.password}"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    status = ["--config", str(config), "status", "--json"]
    assert await asyncio.to_thread(main, status) == 0  # both fresh
    fresh = {s["key"]: s for s in json.loads(capsys.readouterr().out)}
    assert fresh["soho.customers"]["stale"] is False and fresh["soho.customers"]["live_rows"] == 120

    soho.sim.faults.add(HttpError(503), times=None)  # type: ignore[attr-defined]
    outcomes = await sync(engine, make_settings(soho, soho_extra={"max_retries": 0}))
    assert exit_code(list(outcomes.values())) == 1
    # Make the valomnia success old: three days ago, for a daily schedule.
    old = datetime.now(UTC) - timedelta(days=3)
    await execute(
        engine,
        "UPDATE pipeline.sync_runs SET started_at = :t, finished_at = :t WHERE stream = 'valomnia.authorities'",
        t=old,
    )

    assert await asyncio.to_thread(main, status) == 1
    report = {s["key"]: s for s in json.loads(capsys.readouterr().out)}
    assert report["soho.customers"]["failed"] is True and report["soho.customers"]["last_error"]
    assert report["valomnia.authorities"]["stale"] is True
    assert report["afosto.contacts"]["configured"] is False

    assert await asyncio.to_thread(main, ["--config", str(config), "status"]) == 1
    assert "STALE" in capsys.readouterr().out
