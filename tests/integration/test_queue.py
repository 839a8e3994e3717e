"""The queue backend with real processes: `pipeline worker`s, `pipeline sync` queuing and
waiting, `pipeline schedule` deferring, on one Postgres; and what each fault leaves behind."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from tests.helpers import live_rows, rows
from tests.queue_procs import QUEUE_SETTINGS, jobs, processes
from tests.source_limits import expect_config


def _config(
    path: Path,
    soho: RunningSimulator,
    valomnia: RunningSimulator | None = None,
    *,
    schedule: str | None = None,
) -> Path:
    schedule_line = f'schedule = "{schedule}"' if schedule else ""
    text = (
        QUEUE_SETTINGS
        + f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "${{TEST_SOHO_TOKEN}}"
max_concurrency = 2

[sources.soho.streams.customers]
{schedule_line}
"""
    )
    if valomnia is not None:
        text += f"""
[sources.valomnia]
base_url = "{valomnia.url}"
username = "{valomnia.sim.username}"
password = "${{TEST_VALOMNIA_PASSWORD}}"

[sources.valomnia.streams.authorities]
page_size = 20
"""
    path.write_text(text, encoding="utf-8")
    return path


def _env(
    database_url: str, soho: RunningSimulator, valomnia: RunningSimulator | None = None
) -> dict[str, str]:
    env = {"DATABASE_URL": database_url, "TEST_SOHO_TOKEN": soho.sim.token}  # type: ignore[attr-defined]
    if valomnia is not None:
        env["TEST_VALOMNIA_PASSWORD"] = valomnia.sim.password  # type: ignore[attr-defined]
    return env


async def test_sync_runs_on_the_workers_and_reports_as_a_local_sync(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=300, seed=81, latency=0.01)
    valomnia_sim = ValomniaSimulator(authorities=200, seed=82, latency=0.01)
    async with serve(soho_sim) as soho, serve(valomnia_sim) as valomnia:
        config = _config(tmp_path / "pipeline.toml", soho, valomnia)
        env = _env(database_url, soho, valomnia)
        expect_config(config, env, soho, valomnia)
        async with processes(config, env, tmp_path) as procs:
            await procs.worker()
            await procs.worker()
            code, output = await procs.run("sync")
            assert code == 0, procs.all_output()

    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}
    assert await live_rows(engine, "valomnia.authorities") == {
        a["id"]: a for a in valomnia_sim.truth()
    }
    done = await jobs(engine)
    assert sorted((j.stream, j.status) for j in done) == [
        ("soho.customers", "succeeded"),
        ("valomnia.authorities", "succeeded"),
    ]
    runs = await rows(
        engine, "SELECT stream, status, run_id::text AS run_id FROM pipeline.sync_runs"
    )
    assert sorted((r.stream, r.status) for r in runs) == [
        ("soho.customers", "succeeded"),
        ("valomnia.authorities", "succeeded"),
    ]
    for run in runs:  # the command names each job with the run it waits for
        assert f"run {run.run_id}" in output
    assert "succeeded" in output and "soho.customers" in output
