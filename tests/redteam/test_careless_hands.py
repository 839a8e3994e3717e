"""Findings 2 and 5, and the class "every CLI argument or file that is not what it should be":
`backfill --slices 100000` grew to 2.4 GB, printed nothing and ignored SIGINT and SIGTERM; a
cron that never fires passed validation and then took `pipeline schedule` down; a special file
given as the configuration hung the command. Each is now one line and exit 2 (or 130 for a
signal), from the real `pipeline` process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import write_config

SOHO = {"base_url": "http://127.0.0.1:9/api/v1", "token": "t" * 32}


async def _pipeline(
    *argv: str, env: dict[str, str] | None = None, seconds: float = 30
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *argv,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), seconds)
    assert process.returncode is not None
    return process.returncode, (out + err).decode(errors="replace")


def _one_line_exit_2(code: int, output: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pipeline"), output


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "pipeline.toml",
        {
            "sources.valomnia": {
                "base_url": "http://127.0.0.1:9",
                "username": "u",
                "password": "p" * 12,
            }
        },
    )


def _bad_arguments(config: Path, tmp_path: Path) -> list[tuple[str, list[str]]]:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    huge_window = ["--since", "2024-01-01T00:00:00Z", "--until", "2024-01-01T00:00:10Z"]
    c = ["--config", str(config)]
    return [
        (
            "slices far beyond the maximum",
            [*c, "backfill", "authorities", "--since", "2024-01-01", "--slices", "100000"],
        ),
        (
            "one slice more than the maximum",
            [*c, "backfill", "authorities", "--since", "2024-01-01", "--slices", "65"],
        ),
        (
            "more slices than the window has seconds",
            [*c, "backfill", "authorities", *huge_window, "--slices", "20"],
        ),
        (
            "slices as unicode digits",
            [*c, "backfill", "authorities", "--since", "2024-01-01", "--slices", "١٢"],
        ),
        ("a config that is a device", ["--config", "/dev/zero", "status"]),
        ("a config that is a pipe", ["--config", str(fifo), "status"]),
        ("a config that is a folder", ["--config", str(tmp_path), "status"]),
        ("a config path with a NUL", ["--config", "pipe\x01line.toml", "status"]),
        ("an out-of-range dashboard port", [*c, "dashboard", "--port", "99999"]),
        ("a negative sandbox port", ["sandbox", "--soho-port", "-1"]),
        ("a grace that is not a number", [*c, "schedule", "--grace", "nan"]),
        ("an endless grace", [*c, "worker", "--grace", "inf"]),
        ("a worker concurrency beyond reason", [*c, "worker", "--concurrency", "100000"]),
        (
            "a rederive batch beyond reason",
            [*c, "rederive", "authorities", "--batch-size", "1000000000000"],
        ),
        (
            "a since that is not a date",
            [*c, "backfill", "authorities", "--since", "\x1b[2Kyesterday"],
        ),
    ]


async def test_every_bad_argument_or_file_is_one_line_and_exit_2(
    config: Path, tmp_path: Path
) -> None:
    cases = _bad_arguments(config, tmp_path)
    results = await asyncio.gather(*(_pipeline(*argv, seconds=60) for _, argv in cases))
    for (what, _), (code, output) in zip(cases, results, strict=True):
        try:
            _one_line_exit_2(code, output)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        assert "\x1b" not in output, what


async def test_a_cron_that_never_fires_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pipeline.toml",
        {"sources.soho": SOHO, "sources.soho.streams.customers": {"schedule": "0 0 30 2 *"}},
    )
    code, output = await _pipeline("--config", str(config), "schedule")
    _one_line_exit_2(code, output)
    assert "sources.soho.streams.customers.schedule" in output and "never fires" in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_during_set_up_ends_the_command_at_once(
    config: Path, signum: signal.Signals
) -> None:
    """The database does not answer (the command waits up to 10 s for one): the first signal
    ends the wait, and nothing is left behind."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        "--config",
        str(config),
        "backfill",
        "authorities",
        "--since",
        "2024-01-01",
        "--slices",
        "8",
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(2.5)  # past start-up, into the wait for the database
    assert process.returncode is None
    process.send_signal(signum)
    sent = time.monotonic()
    out, err = await asyncio.wait_for(process.communicate(), 10)
    assert time.monotonic() - sent < 3, (out + err).decode()
    assert process.returncode == 130, (out + err).decode()
    assert b"Traceback" not in out + err
