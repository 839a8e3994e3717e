"""kill -9 in the middle of a sync (a real subprocess), then run again: the result equals an
uninterrupted run, and the state never points past committed data."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from tests.helpers import live_rows, rows, scalar


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
    return await spawn_sync(config, env)


async def _pages_committed(engine: AsyncEngine) -> dict[str, int]:
    result = await rows(
        engine, "SELECT stream, pages FROM pipeline.sync_runs WHERE status = 'running'"
    )
    return {r.stream: r.pages for r in result}


async def _assert_state_not_ahead_of_data(engine: AsyncEngine, valomnia: ValomniaSimulator) -> None:
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
    # A full scan commits its watermark only when complete.
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
