"""Where a timed window's CPU went: to the pipeline's processes, to the simulators, to the
Postgres backends serving the benchmark's database, or to the rest of the machine (Postgres's
own background work, and anything else running on a shared machine).

A latency-bound run leaves the cores idle most of the time; when more workers stop making a
run faster, this tells whether the machine ran out of CPU and whose work filled it.

    meter = await CpuMeter.start(sims=sims_pid, watched=worker_pids, conn=conn, database=name)
    ... start and reap the command being timed (a child of this process) ...
    used = await meter.stop(seconds)
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
import psutil


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over the window, and how many cores were busy on average."""

    pipeline: float  # the reaped command and the watched processes (workers)
    simulators: float
    postgres: float  # the backends serving the database (a server on this machine only)
    rest: float  # whatever else ran on the machine
    busy_cores: float
    cores: int


def _busy(times: psutil._common.scputimes) -> float:  # type: ignore[name-defined]
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _backends(conn: asyncpg.Connection, database: str) -> dict[int, float]:
    """CPU seconds so far of each server process connected to `database` but `conn`'s own
    (none when the server runs on another machine: its pids are not ours to read)."""
    found = {}
    own = conn.get_server_pid()
    for row in await conn.fetch(_BACKENDS, database):
        if row["pid"] == own:
            continue
        try:
            process = psutil.Process(row["pid"])
            if process.name() == "postgres":
                times = process.cpu_times()
                found[process.pid] = times.user + times.system
        except psutil.Error:
            continue  # gone meanwhile, or not a process of this machine
    return found


_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE datname = $1"


class CpuMeter:
    """Snapshots at `start`; `stop` gives the differences. The timed command must be a child of
    this process reaped inside the window (its CPU is then in RUSAGE_CHILDREN); `watched`
    processes stay alive through it (read directly). Backends of `database` come and go, so
    they are sampled every `every` seconds (their pids from pg_stat_activity on `conn`, a
    millisecond or two each time): what one spends after its last sample counts as rest."""

    def __init__(
        self, sims: int, watched: Iterable[int], conn: asyncpg.Connection, database: str
    ) -> None:
        self.sims = psutil.Process(sims)
        self.watched = [psutil.Process(pid) for pid in watched]
        self.conn = conn
        self.database = database
        self.machine = _busy(psutil.cpu_times())
        self.children = _children()
        self.own = _own()
        self.sims_seconds = _seconds(self.sims)
        self.watched_seconds = sum(_seconds(p) for p in self.watched)
        self.backends_at_start: dict[int, float] = {}
        self.backends: dict[int, float] = {}
        self.sampler: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        *,
        sims: int,
        watched: Iterable[int] = (),
        conn: asyncpg.Connection,
        database: str,
        every: float = 0.25,
    ) -> CpuMeter:
        meter = cls(sims, watched, conn, database)
        meter.backends_at_start = await _backends(conn, database)
        meter.backends = dict(meter.backends_at_start)
        meter.sampler = asyncio.create_task(meter._sample(every))
        return meter

    async def _sample(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.backends.update(await _backends(self.conn, self.database))

    async def stop(self, seconds: float) -> CpuUse:
        """The window's use, `seconds` being its wall time."""
        if self.sampler is not None:
            self.sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sampler
        self.backends.update(await _backends(self.conn, self.database))
        machine = _busy(psutil.cpu_times()) - self.machine
        pipeline = (_children() - self.children) + (
            sum(_seconds(p) for p in self.watched) - self.watched_seconds
        )
        simulators = _seconds(self.sims) - self.sims_seconds
        postgres = sum(
            used - self.backends_at_start.get(pid, 0.0) for pid, used in self.backends.items()
        )
        own = _own() - self.own  # this process's sampling and waiting
        return CpuUse(
            pipeline=pipeline,
            simulators=simulators,
            postgres=postgres,
            rest=max(0.0, machine - pipeline - simulators - postgres - own),
            busy_cores=machine / seconds if seconds else 0.0,
            cores=psutil.cpu_count() or 1,
        )


__all__ = ["CpuMeter", "CpuUse"]
