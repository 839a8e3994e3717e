"""Real `pipeline` processes for the queue backend's tests: workers, schedulers, syncs, each a
child process that can be signalled or SIGKILLed, with its log kept in a file for failures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from tests.helpers import rows, scalar, write_config
from tests.source_limits import expect_config

# Heartbeats every half second; a worker silent for 2 s is dead (the default is 10 s / 60 s).
QUEUE_EXECUTION = {"backend": "queue", "heartbeat_seconds": 0.5, "stalled_after_seconds": 2}


class Processes:
    """Children started by one test; whatever is still running at its end is killed."""

    def __init__(self, config: Path, env: Mapping[str, str], logs: Path) -> None:
        self.config = config
        self.env = {**os.environ, **env}
        self.logs = logs
        self.started: list[tuple[str, asyncio.subprocess.Process, Path]] = []

    async def start(self, *args: str, name: str | None = None) -> asyncio.subprocess.Process:
        name = name or f"{args[0]}-{len(self.started)}"
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pipeline",
                "--log-format",
                "json",
                "--config",
                str(self.config),
                *args,
                env=self.env,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.started.append((name, process, log))
        return process

    async def worker(self, concurrency: int = 2, grace: float = 5.0) -> asyncio.subprocess.Process:
        return await self.start(
            "worker", "--concurrency", str(concurrency), "--grace", str(grace), name=None
        )

    async def run(self, *args: str, seconds: float = 120) -> tuple[int, str]:
        """A command to its end: exit code and output."""
        process = await self.start(*args)
        await asyncio.wait_for(process.wait(), seconds)
        assert process.returncode is not None
        return process.returncode, self.output(process)

    def output(self, process: asyncio.subprocess.Process) -> str:
        for _, started, log in self.started:
            if started is process:
                return log.read_text(encoding="utf-8", errors="replace")
        raise KeyError(process)

    def all_output(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{log.read_text(encoding='utf-8', errors='replace')[-3000:]}"
            for name, _, log in self.started
        )

    async def stop_all(self) -> None:
        for _, process, _ in self.started:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGKILL)
                await process.wait()


@contextlib.asynccontextmanager
async def processes(config: Path, env: Mapping[str, str], logs: Path) -> AsyncIterator[Processes]:
    procs = Processes(config, env, logs)
    try:
        yield procs
    finally:
        await procs.stop_all()


async def jobs(engine: AsyncEngine) -> list[Any]:
    return await rows(
        engine,
        "SELECT id, status::text AS status, attempts, args->>'stream' AS stream, worker_id "
        "FROM pipeline_queue.procrastinate_jobs ORDER BY id",
    )


async def until(check: Any, seconds: float = 60.0, every: float = 0.1, what: str = "") -> Any:
    """Poll the async `check` until it returns something true; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what or check}")
        await asyncio.sleep(every)


async def pages_running(engine: AsyncEngine, stream: str) -> int:
    return (
        await scalar(
            engine,
            "SELECT max(pages) FROM pipeline.sync_runs WHERE stream = :s AND status = 'running'",
            s=stream,
        )
        or 0
    )


# ---- one queue-backend configuration: Soho (and Valomnia), processes, what they left ---------


def queue_config(
    path: Path,
    soho: RunningSimulator,
    valomnia: RunningSimulator | None = None,
    *,
    schedule: str | None = None,
) -> Path:
    tables: dict[str, dict[str, Any]] = {
        "execution": QUEUE_EXECUTION,
        "sources.soho": {
            "base_url": f"{soho.url}/api/v1",
            "token": "${TEST_SOHO_TOKEN}",
            "max_concurrency": 2,
        },
        "sources.soho.streams.customers": {"schedule": schedule},
    }
    if valomnia is not None:
        tables["sources.valomnia"] = {
            "base_url": valomnia.url,
            "username": valomnia.sim.username,  # type: ignore[attr-defined]
            "password": "${TEST_VALOMNIA_PASSWORD}",
        }
        tables["sources.valomnia.streams.authorities"] = {"page_size": 20}
    return write_config(path, tables)


def queue_env(
    database_url: str, soho: RunningSimulator, valomnia: RunningSimulator | None = None
) -> dict[str, str]:
    env = {"DATABASE_URL": database_url, "TEST_SOHO_TOKEN": soho.sim.token}  # type: ignore[attr-defined]
    if valomnia is not None:
        env["TEST_VALOMNIA_PASSWORD"] = valomnia.sim.password  # type: ignore[attr-defined]
    return env


@contextlib.asynccontextmanager
async def queue_processes(
    tmp_path: Path,
    database_url: str,
    soho_sim: SohoSimulator,
    valomnia_sim: ValomniaSimulator | None = None,
    *,
    schedule: str | None = None,
) -> AsyncIterator[Processes]:
    """The simulators served, a queue-backend pipeline.toml pointing at them (their limits
    registered), and the test's processes, killed at its end."""
    async with contextlib.AsyncExitStack() as stack:
        soho = await stack.enter_async_context(serve(soho_sim))
        valomnia = await stack.enter_async_context(serve(valomnia_sim)) if valomnia_sim else None
        config = queue_config(tmp_path / "pipeline.toml", soho, valomnia, schedule=schedule)
        env = queue_env(database_url, soho, valomnia)
        expect_config(config, env, *[r for r in (soho, valomnia) if r is not None])
        yield await stack.enter_async_context(processes(config, env, tmp_path))


async def runs_of(engine: AsyncEngine, stream: str) -> list[Any]:
    return await rows(
        engine,
        "SELECT status, error, watermark_before, run_id::text AS run_id FROM pipeline.sync_runs "
        "WHERE stream = :s ORDER BY id",
        s=stream,
    )


async def finished_jobs(engine: AsyncEngine) -> list[Any]:
    return [j for j in await jobs(engine) if j.status in ("succeeded", "failed")]


def slow_valomnia(seed: int) -> ValomniaSimulator:
    # ~45 pages of 20 at 40 ms each: a job long enough to be interrupted in the middle.
    return ValomniaSimulator(authorities=900, seed=seed, latency=0.04)


async def at_least(count: Any, minimum: int) -> bool:
    return (await count) >= minimum


__all__ = [
    "QUEUE_EXECUTION",
    "Processes",
    "at_least",
    "finished_jobs",
    "jobs",
    "pages_running",
    "processes",
    "queue_config",
    "queue_env",
    "queue_processes",
    "runs_of",
    "slow_valomnia",
    "until",
]
