"""Finding 3: more than 20 streams at once failed on the program's own connection pool (10 +
10 overflow): with 24 instances of one API, streams 21-24 failed after 30 s and left no
`sync_runs` row. Now `[execution] max_streams` bounds the streams a process runs at once (the
rest wait their turn), the pool is sized from it, and a stream that cannot get a connection
is recorded failed, saying what to change."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import exits
from pipeline.db import plain_url
from pipeline.run.slots import RESERVE_CONNECTIONS
from pipeline.sandbox import SANDBOXES, Accounts, RunningAccounts, SohoSimulator, serve_accounts
from tests.helpers import rows, run_cli, write_config
from tests.queue_procs import processes, until
from tests.roles import as_user
from tests.source_limits import expect_config

INSTANCES = 60
MAX_STREAMS = 8


@contextlib.asynccontextmanager
async def _shops(count: int) -> AsyncIterator[RunningAccounts]:
    """`count` Soho accounts on one server, two pages each, a little latency per request."""
    accounts = Accounts(
        SohoSimulator(customers=30, seed=200 + i, latency=0.02).as_account(f"shop_{i:02d}")
        for i in range(count)
    )
    async with serve_accounts(accounts) as running:
        yield running


def _config(path: Path, running: RunningAccounts, *, schedule: str | None = None) -> Path:
    tables: dict[str, dict[str, Any]] = {"execution": {"max_streams": MAX_STREAMS}}
    for name, account in running.each().items():
        tables[f"sources.{name}"] = {
            "type": "soho",
            **SANDBOXES["soho"].settings(account),
            "max_concurrency": 1,
            "backoff_seconds": 0.01,
        }
        if schedule:
            tables[f"sources.{name}.streams.customers"] = {"schedule": schedule}
    write_config(path, tables)
    expect_config(path, os.environ, *running.each().values())
    return path


@contextlib.asynccontextmanager
async def _connections_peak(database_url: str) -> AsyncIterator[list[int]]:
    """The most connections the pipeline held to the test's database at once, sampled while
    the block runs (the test's own engine is not used meanwhile)."""
    database = urlsplit(database_url).path.lstrip("/")
    conn = await asyncpg.connect(
        plain_url(database_url), server_settings={"application_name": "probe"}
    )
    peak = [0]

    async def sample() -> None:
        while True:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND application_name = 'pipeline'",
                database,
            )
            peak[0] = max(peak[0], count)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await conn.close()


async def _runs_by_stream(engine: AsyncEngine) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for r in await rows(engine, "SELECT stream, status, error FROM pipeline.sync_runs ORDER BY id"):
        found.setdefault(r.stream, []).append(r)
    return found


async def test_sixty_instances_wait_their_turn_within_the_pool(
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    async with _shops(INSTANCES) as running:
        config = _config(tmp_path / "pipeline.toml", running)
        async with _connections_peak(database_url) as peak:
            code = await run_cli("--config", str(config), "--log-level", "warning", "sync")
    assert code == exits.OK, capsys.readouterr().out[-3000:]
    runs = await _runs_by_stream(engine)
    assert len(runs) == INSTANCES
    assert all([r.status for r in found] == ["succeeded"] for found in runs.values()), runs
    assert 1 < peak[0] <= MAX_STREAMS + RESERVE_CONNECTIONS, peak


async def test_sixty_instances_under_the_scheduler_never_fail_on_the_pool(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with _shops(INSTANCES) as running:
        config = _config(tmp_path / "pipeline.toml", running, schedule="*/2 * * * * *")
        env = {"DATABASE_URL": database_url}
        async with (
            _connections_peak(database_url) as peak,
            processes(config, env, tmp_path) as procs,
        ):
            scheduler = await procs.start("schedule", "--grace", "10")

            async def every_instance_ran() -> bool:
                runs = await _runs_by_stream(engine)
                done = [
                    s for s, found in runs.items() if any(r.status == "succeeded" for r in found)
                ]
                return len(done) == INSTANCES

            await until(every_instance_ran, what="every instance synced once", seconds=90)
            scheduler.send_signal(signal.SIGTERM)
            await asyncio.wait_for(scheduler.wait(), 30)
            output = procs.output(scheduler)
    assert scheduler.returncode == 0, output[-3000:]
    assert "QueuePool limit" not in output and "scheduled_run_crashed" not in output
    runs = await _runs_by_stream(engine)
    statuses = {r.status for found in runs.values() for r in found}
    assert statuses <= {"succeeded", "interrupted"}, output[-8000:]
    # A stop lets every running stream reach a page boundary (none cancelled mid-page), and
    # those still waiting for their turn say so.
    stopped = {r.error for found in runs.values() for r in found if r.status == "interrupted"}
    assert all("page boundary" in e or "before its turn" in e for e in stopped), stopped
    assert peak[0] <= MAX_STREAMS + RESERVE_CONNECTIONS, peak


async def test_a_stream_refused_a_connection_is_recorded_failed_saying_what_to_change(
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server refuses beyond a role's CONNECTION LIMIT: the streams it refused still have
    their failed row, written once another stream's connection came free."""
    admin = await asyncpg.connect(plain_url(database_url))
    owner = await admin.fetchval("SELECT current_user")
    role = f"pipeline_test_limited_{os.getpid()}"
    # A member of the tables' owner (its privileges, not its superuser bypass of the limit).
    await admin.execute(
        f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT 3 IN ROLE {owner}"
    )
    try:
        monkeypatch.setenv("DATABASE_URL", as_user(database_url, role, "pw"))
        async with _shops(10) as running:
            config = _config(tmp_path / "pipeline.toml", running)
            code = await run_cli("--config", str(config), "--log-level", "warning", "sync")
        out = capsys.readouterr().out
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    assert code == exits.FAILED
    runs = await _runs_by_stream(engine)
    assert len(runs) == 10  # every instance has its row
    failed = [r for found in runs.values() for r in found if r.status == "failed"]
    assert failed and all(
        "could not start" in r.error and "max_streams" in r.error for r in failed
    ), [r.error for r in failed]
    assert "max_streams" in out
