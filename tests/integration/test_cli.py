"""The `pipeline` command end to end: exit codes, summaries, status, sandbox, demo."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from pipeline.cli import main
from pipeline.sandbox import SANDBOXES, RunningSimulator
from pipeline.sources import SOURCES
from tests.source_limits import expect_config


def _write_config(
    path: Path, soho: RunningSimulator, valomnia: RunningSimulator, soho_token: str
) -> Path:
    path.write_text(
        f"""
[sources.soho]
base_url = "{soho.url}/api/v1"
token = "{soho_token}"
backoff_seconds = 0.01

[sources.valomnia]
base_url = "{valomnia.url}"
username = "{valomnia.sim.username}"
password = "${{CLI_TEST_VALOMNIA_PASSWORD}}"
""",
        encoding="utf-8",
    )
    expect_config(path, os.environ, soho, valomnia)  # cli_env set the password
    return path


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, valomnia: RunningSimulator) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLI_TEST_VALOMNIA_PASSWORD", valomnia.sim.password)  # type: ignore[attr-defined]
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


@pytest.mark.usefixtures("cli_env")
async def test_sync_exit_codes_summary_and_status(
    tmp_path: Path,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_cli("db", "upgrade") == 0
    assert await run_cli("db", "upgrade") == 0  # idempotent
    from pipeline import db

    assert f"revision {db.head_revision()} (head)" in capsys.readouterr().out

    bad = _write_config(tmp_path / "bad.toml", soho, valomnia, soho_token="f" * 32)
    assert await run_cli("--config", str(bad), "sync") == 1
    out = capsys.readouterr().out
    assert "soho.customers" in out and "failed" in out and "HTTP 401" in out
    assert "valomnia.authorities" in out and "succeeded" in out

    good = _write_config(tmp_path / "good.toml", soho, valomnia, soho_token=soho.sim.token)  # type: ignore[attr-defined]
    assert await run_cli("--config", str(good), "sync", "customers") == 0
    out = capsys.readouterr().out
    assert "soho.customers" in out and "120" in out and "valomnia.authorities" not in out

    assert await run_cli("status") == 0
    out = capsys.readouterr().out
    for expected in ("soho.customers", "valomnia.authorities", "succeeded", "120", "230"):
        assert expected in out


@pytest.mark.usefixtures("cli_env")
async def test_sync_refuses_an_unmigrated_database(
    tmp_path: Path,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    capsys: pytest.CaptureFixture[str],
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline import db

    empty = await db.recreate_database(pg_server_url, f"pipeline_test_empty_{os.getpid()}")
    monkeypatch.setenv("DATABASE_URL", empty)
    config = _write_config(tmp_path / "c.toml", soho, valomnia, soho_token=soho.sim.token)  # type: ignore[attr-defined]
    try:
        assert await run_cli("--config", str(config), "sync") == 2
    finally:
        await db.drop_database(pg_server_url, f"pipeline_test_empty_{os.getpid()}")
    assert "pipeline db upgrade" in capsys.readouterr().err


async def test_demo_runs_end_to_end(
    pg_server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_server_url)
    monkeypatch.setattr("pipeline.demo.DEMO_DATABASE", f"pipeline_demo_test_{os.getpid()}")
    from pipeline import db

    try:
        argv = (
            "--customers",
            "60",
            "--authorities",
            "90",
            "--shipments",
            "80",
            "--contacts",
            "30",
            "--credentials",
            "40",
        )
        assert await run_cli("demo", *argv) == 0
    finally:
        await db.drop_database(pg_server_url, f"pipeline_demo_test_{os.getpid()}")
    out = capsys.readouterr().out
    assert "1. first sync" in out and "2. second sync" in out and "3. third sync" in out
    streams = sum(len(spec.streams) for spec in SOURCES.values())
    assert out.count("succeeded") == 3 * streams  # three rounds of every stream


async def test_sandbox_serves_until_stopped() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        "sandbox",
        *[arg for name in SANDBOXES for arg in (f"--{name}-port", "0")],
        "--customers",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        soho_url = None
        for _ in range(40):
            line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            if line.startswith("Enbro Soho simulator:"):
                soho_url = line.split()[3]
            if "token" in line and soho_url:
                token = line.split('"')[1]
                break
        assert soho_url is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{soho_url}/customers", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                body = await resp.json()
        assert resp.status == 200 and len(body["records"]) == 25
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 10)
