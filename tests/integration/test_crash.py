"""kill -9 in the middle of a sync (a real subprocess), then run again: the result equals an
uninterrupted run, and the state never points past committed data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from tests.helpers import live_rows, rows, scalar
from tests.source_limits import expect_config


def _config(path: Path, soho: RunningSimulator, valomnia: RunningSimulator) -> Path:
    path.write_text(
        f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "${{TEST_SOHO_TOKEN}}"
max_concurrency = 1

[sources.valomnia]
base_url = "{valomnia.url}"
username = "{valomnia.sim.username}"
password = "${{TEST_VALOMNIA_PASSWORD}}"

[sources.valomnia.streams.authorities]
page_size = 20
""",
        encoding="utf-8",
    )
    return path


async def spawn_sync(
    config: Path, env: dict[str, str], *streams: str
) -> asyncio.subprocess.Process:
    """`pipeline sync` in a real child process, so it can be SIGKILLed mid-run."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        "--log-format",
        "json",
        "--config",
        str(config),
        "sync",
        *streams,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _start_sync(
    config: Path, database_url: str, soho: RunningSimulator, valomnia: RunningSimulator
) -> asyncio.subprocess.Process:
    env = {
        "DATABASE_URL": database_url,
        "TEST_SOHO_TOKEN": soho.sim.token,  # type: ignore[attr-defined]
        "TEST_VALOMNIA_PASSWORD": valomnia.sim.password,  # type: ignore[attr-defined]
    }
    expect_config(config, env, soho, valomnia)
    return await spawn_sync(config, env)


async def _pages_committed(engine: AsyncEngine) -> dict[str, int]:
    result = await rows(
        engine, "SELECT stream, pages FROM pipeline.sync_runs WHERE status = 'running'"
    )
    return {r.stream: r.pages for r in result}


async def _assert_state_not_ahead_of_data(
    engine: AsyncEngine, valomnia: ValomniaSimulator, *, check_full_scans: bool = True
) -> None:
    watermark = await scalar(
        engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = 'valomnia.authorities'"
    )
    if watermark is not None:
        stored = await live_rows(engine, "valomnia.authorities")
        older = [
            a for a in valomnia.truth() if datetime.fromisoformat(a["lastUpdated"]) < watermark
        ]
        missing = [a["id"] for a in older if a["id"] not in stored]
        assert not missing, (
            f"state says {watermark} but {len(missing)} older records are not stored"
        )
    if check_full_scans:  # a full scan commits its watermark only when complete
        customers_state = await scalar(
            engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = 'soho.customers'"
        )
        assert customers_state is None


@pytest.mark.parametrize("kill_after_pages", [1, 6])
async def test_kill_9_mid_sync_then_rerun_equals_an_uninterrupted_run(
    engine: AsyncEngine, database_url: str, tmp_path: Path, kill_after_pages: int
) -> None:
    soho_sim = SohoSimulator(customers=500, seed=21, latency=0.06)
    valomnia_sim = ValomniaSimulator(authorities=700, seed=22, latency=0.04)
    async with serve(soho_sim) as soho, serve(valomnia_sim) as valomnia:
        config = _config(tmp_path / "pipeline.toml", soho, valomnia)

        process = await _start_sync(config, database_url, soho, valomnia)
        for _ in range(600):
            progress = await _pages_committed(engine)
            if len(progress) == 2 and min(progress.values()) >= kill_after_pages:
                break
            await asyncio.sleep(0.02)
        else:
            if process.returncode is None:
                process.kill()
            pytest.fail(
                f"the sync never reached {kill_after_pages} pages: {await process.communicate()}"
            )
        process.kill()  # SIGKILL: no cleanup, no finally blocks
        await process.wait()

        assert (
            await scalar(engine, "SELECT count(*) FROM pipeline.sync_runs WHERE status = 'running'")
            == 2
        )
        await _assert_state_not_ahead_of_data(engine, valomnia_sim)
        partial = len(await live_rows(engine, "soho.customers"))
        assert 0 < partial < 500

        rerun = await _start_sync(config, database_url, soho, valomnia)
        stdout, stderr = await rerun.communicate()
        assert rerun.returncode == 0, stderr.decode()[-2000:]

    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}
    assert await live_rows(engine, "valomnia.authorities") == {
        a["id"]: a for a in valomnia_sim.truth()
    }
    statuses = await rows(engine, "SELECT stream, status FROM pipeline.sync_runs ORDER BY id")
    assert sorted(s.status for s in statuses) == [
        "interrupted",
        "interrupted",
        "succeeded",
        "succeeded",
    ]
    latest = max(datetime.fromisoformat(a["lastUpdated"]) for a in valomnia_sim.truth())
    assert (
        await scalar(
            engine,
            "SELECT watermark FROM pipeline.stream_state WHERE stream = 'valomnia.authorities'",
        )
        == latest
    )
    assert b"soho.customers" in stdout and b"succeeded" in stdout


async def test_sigterm_marks_running_streams_interrupted_and_exits_promptly(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    import signal
    import time

    soho_sim = SohoSimulator(customers=500, seed=23, latency=0.06)
    valomnia_sim = ValomniaSimulator(authorities=700, seed=24, latency=0.04)
    async with serve(soho_sim) as soho, serve(valomnia_sim) as valomnia:
        config = _config(tmp_path / "pipeline.toml", soho, valomnia)
        process = await _start_sync(config, database_url, soho, valomnia)
        for _ in range(600):
            progress = await _pages_committed(engine)
            if len(progress) == 2 and min(progress.values()) >= 2:
                break
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        await asyncio.wait_for(process.wait(), 10)
        assert time.monotonic() - stopped < 5
        assert process.returncode == 130

        statuses = await rows(engine, "SELECT status, error FROM pipeline.sync_runs")
        assert [s.status for s in statuses] == ["interrupted", "interrupted"]
        assert all("stopped at a page boundary" in s.error for s in statuses)
        await _assert_state_not_ahead_of_data(engine, valomnia_sim)

        rerun = await _start_sync(config, database_url, soho, valomnia)
        _, stderr = await rerun.communicate()
        assert rerun.returncode == 0, stderr.decode()[-2000:]

    # The next run completed the work.
    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}
    assert await live_rows(engine, "valomnia.authorities") == {
        a["id"]: a for a in valomnia_sim.truth()
    }


async def test_prices_killed_mid_run_resume_at_the_next_group(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    from pipeline.sandbox import AfostoSimulator

    sim = AfostoSimulator(
        contacts=3, shipments=3, parcels=3, groups=6, prices_per_group=60, seed=41, latency=0.05
    )
    async with serve(sim) as afosto:
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[sources.afosto]
base_url = "{afosto.url}"
token = "${{TEST_AFOSTO_TOKEN}}"
max_concurrency = 1

[sources.afosto.streams.prices]
page_size = 20
""",
            encoding="utf-8",
        )
        env = {"DATABASE_URL": database_url, "TEST_AFOSTO_TOKEN": sim.token}
        expect_config(config, env, afosto)

        async def run_sync() -> asyncio.subprocess.Process:
            return await spawn_sync(config, env, "prices")

        process = await run_sync()
        done: list[str] = []
        for _ in range(1000):
            checkpoint = await scalar(
                engine,
                "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'afosto.prices'",
            )
            done = (checkpoint or {}).get("done_partitions", [])
            if len(done) >= 2:
                break
            await asyncio.sleep(0.01)
        process.kill()
        await process.wait()
        checkpoint = await scalar(
            engine, "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'afosto.prices'"
        )
        done = checkpoint["done_partitions"]  # as committed when the process died
        assert 2 <= len(done) < 6, done

        sim.clear_requests()
        rerun = await run_sync()
        _, stderr = await rerun.communicate()
        assert rerun.returncode == 0, stderr.decode()[-2000:]

    groups_read_again = {r.path.split("/")[3] for r in sim.requests if r.path.endswith("/prices")}
    assert groups_read_again.isdisjoint(done)  # finished groups were not read again
    assert len(groups_read_again) == 6 - len(done)
    assert await live_rows(engine, "afosto.prices") == {p["id"]: p for p in sim.truth("prices")}
    assert (
        await scalar(
            engine, "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'afosto.prices'"
        )
        is None
    )


async def test_sparkfly_and_digilocker_killed_mid_run_then_rerun_equal_the_source(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    from pipeline.sandbox import DigiLockerSimulator, SparkflySimulator

    sparkfly_sim = SparkflySimulator(credentials=600, seed=71, latency=0.05)
    digilocker_sim = DigiLockerSimulator(issuers=16, seed=72, latency=0.05)
    async with serve(sparkfly_sim) as sparkfly, serve(digilocker_sim) as digilocker:
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[sources.sparkfly]
base_url = "{sparkfly.url}"
token = "${{TEST_SPARKFLY_TOKEN}}"
max_concurrency = 1

[sources.sparkfly.streams.credentials]
page_size = 25

[sources.digilocker]
base_url = "{digilocker.url}/public"
client_id = "{digilocker_sim.client_id}"
client_secret = "${{TEST_DIGILOCKER_SECRET}}"
max_concurrency = 1
""",
            encoding="utf-8",
        )
        env = {
            "DATABASE_URL": database_url,
            "TEST_SPARKFLY_TOKEN": sparkfly_sim.token,
            "TEST_DIGILOCKER_SECRET": digilocker_sim.client_secret,
        }
        expect_config(config, env, sparkfly, digilocker)

        async def run_sync() -> asyncio.subprocess.Process:
            return await spawn_sync(config, env)

        process = await run_sync()
        for _ in range(1000):
            checkpoint = await scalar(
                engine,
                "SELECT checkpoint FROM pipeline.stream_state WHERE stream = 'digilocker.doctypes'",
            )
            credentials_pages = (await _pages_committed(engine)).get("sparkfly.credentials", 0)
            if len((checkpoint or {}).get("done_partitions", [])) >= 3 and credentials_pages >= 3:
                break
            await asyncio.sleep(0.01)
        process.kill()
        await process.wait()
        assert 0 < len(await live_rows(engine, "sparkfly.credentials")) < 600

        rerun = await run_sync()
        _, stderr = await rerun.communicate()
        assert rerun.returncode == 0, stderr.decode()[-2000:]

    assert await live_rows(engine, "sparkfly.credentials") == {
        c["id"]: c for c in sparkfly_sim.truth()
    }
    doctypes = await rows(
        engine, "SELECT key, data FROM digilocker.doctypes WHERE _deleted_at IS NULL"
    )
    expected = {
        f"{issuer['orgid']}/{doc['doctype']}": doc
        for issuer in digilocker_sim.truth("issuers")
        for doc in digilocker_sim.truth("doctypes", orgid=issuer["orgid"])
    }
    assert {r.key: r.data for r in doctypes} == expected
    assert await scalar(engine, "SELECT count(*) FROM digilocker.statistics") == 1


KILL_ROUNDS = int(os.environ.get("PIPELINE_KILL_ROUNDS", "4"))


async def test_kill_9_at_random_pages_of_random_streams_again_and_again(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """Each round kills a full `pipeline sync` at a random page of a random stream; state must
    never point past committed data. A final run must then leave every table equal to its
    source. PIPELINE_KILL_ROUNDS sets how many rounds (default 4)."""
    import random

    from pipeline.sandbox import AfostoSimulator, SparkflySimulator

    rng = random.Random(int(os.environ.get("PIPELINE_KILL_SEED", "7")))
    sims = {
        "soho": SohoSimulator(customers=300, seed=111, latency=0.02),
        "valomnia": ValomniaSimulator(authorities=400, seed=112, latency=0.02),
        "afosto": AfostoSimulator(
            contacts=60,
            shipments=200,
            parcels=200,
            groups=4,
            prices_per_group=40,
            seed=113,
            latency=0.02,
        ),
        "sparkfly": SparkflySimulator(credentials=250, seed=114, latency=0.02),
    }
    async with contextlib.AsyncExitStack() as stack:
        running = {name: await stack.enter_async_context(serve(sim)) for name, sim in sims.items()}
        soho, valomnia, afosto, sparkfly = (
            running[n] for n in ("soho", "valomnia", "afosto", "sparkfly")
        )
        config = tmp_path / "pipeline.toml"
        config.write_text(
            f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "{sims["soho"].token}"
max_concurrency = 2

[sources.valomnia]
base_url = "{valomnia.url}"
username = "{sims["valomnia"].username}"
password = "{sims["valomnia"].password}"

[sources.valomnia.streams.authorities]
page_size = 20

[sources.afosto]
base_url = "{afosto.url}"
token = "{sims["afosto"].token}"
max_concurrency = 2

[sources.afosto.streams.shipments]
page_size = 20

[sources.afosto.streams.parcels]
page_size = 20

[sources.afosto.streams.prices]
page_size = 10

[sources.sparkfly]
base_url = "{sparkfly.url}"
token = "{sims["sparkfly"].token}"

[sources.sparkfly.streams.credentials]
page_size = 20
""",
            encoding="utf-8",
        )
        env = {"DATABASE_URL": database_url}
        expect_config(config, env, *running.values())
        streams = [
            "soho.customers",
            "valomnia.authorities",
            "afosto.contacts",
            "afosto.shipments",
            "afosto.parcels",
            "afosto.prices",
            "sparkfly.credentials",
        ]
        for _round in range(KILL_ROUNDS):
            victim, at_page = rng.choice(streams), rng.randint(1, 6)
            process = await spawn_sync(config, env)
            for _ in range(1500):
                if (await _pages_committed(engine)).get(
                    victim, 0
                ) >= at_page or process.returncode is not None:
                    break
                await asyncio.sleep(0.005)
            if process.returncode is None:
                process.kill()
            await process.wait()
            await _assert_state_not_ahead_of_data(engine, sims["valomnia"], check_full_scans=False)
            # The sources change between rounds, as they would between nightly runs.
            sims["soho"].update_customer(
                rng.choice(sims["soho"].ids), email=f"r{_round}@example.org"
            )
            sims["valomnia"].insert(f"Round {_round} role")

        final = await spawn_sync(config, env)
        _, stderr = await final.communicate()
        assert final.returncode == 0, stderr.decode()[-2000:]

    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in sims["soho"].truth()}
    assert await live_rows(engine, "valomnia.authorities") == {
        a["id"]: a for a in sims["valomnia"].truth()
    }
    for resource, table in (
        ("contacts", "afosto.contacts"),
        ("shipments", "afosto.shipments"),
        ("parcels", "afosto.parcels"),
        ("prices", "afosto.prices"),
    ):
        assert await live_rows(engine, table) == {
            r["id"]: r for r in sims["afosto"].truth(resource)
        }, table
    assert await live_rows(engine, "sparkfly.credentials") == {
        c["id"]: c for c in sims["sparkfly"].truth()
    }
