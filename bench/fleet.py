"""The fleet benchmark: many accounts of one API, and one big stream, through the queue backend.

    .venv/bin/python bench/fleet.py           # 16 Soho accounts x 2,000 customers; 200,000 shipments
    .venv/bin/python bench/fleet.py --quick   # a smoke run on small numbers

Every scenario runs in one run, on a fresh database each (a clone of one that `pipeline db
upgrade` migrated), against simulators in their own process (bench/serve_sims.py):

- The fleet: `--accounts` Soho accounts, each a `[sources.soho_NN] type = "soho"` table and a
  simulator of its own on its own port (`--customers` each, seed NN, every request answered
  `--latency` seconds late). `pipeline sync` of every account's customers with the local backend
  (all accounts at once in its one process), then with the queue backend and 1, 2, 4
  `pipeline worker` processes of `--worker-concurrency` (1) job each, so the number of worker
  processes is the number of accounts in flight. Each account reads one page at a time
  (`--account-concurrency` 1, its max_concurrency): the work waits on the network, not the
  CPU, and more worker processes should divide the time.
  Why one job a worker: every `pipeline sync` command spends about 2 s starting (mostly Python
  imports) whatever the backend, so 4 workers can be 3.5x faster than 1 only if one worker
  waits on the network some 20 times as long: 16 accounts x 80 pages x 50 ms = 64 s at one
  page in flight. With 4 jobs a worker, 4 workers run all 16 accounts at once (about 4.5 s),
  the start-up is a third of their time, and 16 accounts at once need over a core of CPU
  (`--worker-concurrency 4` measures it).
- One big stream: `pipeline sync afosto.shipments` (`--shipments` records, bench/run.py's
  settings) with the local backend and with the queue backend and one worker.

The time of a scenario is the `pipeline sync` command's, from its start to its exit (the
workers were started and idle before, Postgres vacuumed and checkpointed); beside it, the runs'
span: the first run's start to the last run's end in sync_runs. Each scenario runs `--repeat`
times (rounds, each in the reverse order of the one before) and its median run is shown; a
ratio is taken within each round, of two runs made under the same other load, and its median
over the rounds reported. Results: a table on stdout and JSON in
bench/results/fleet.json. Exit 1 when a result is wrong (an account's rows differ from its
simulator's in count or checksum, a job did not succeed, a sync failed); a missed target is
printed with its figures, not failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import CpuMeter, CpuUse  # noqa: E402
from bench.run import Sims, settle, write_config  # noqa: E402
from bench.serve_sims import checksum  # noqa: E402
from pipeline import db  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.tables import QUEUE_SCHEMA  # noqa: E402

SHIPMENTS = "afosto.shipments"
FLEET_TARGET = 3.5  # 1 worker's time / 4 workers'
SHIPMENTS_TARGET = 1.10  # queue (one worker) time / local time
QUICK = {"accounts": 4, "customers": 60, "latency": 0.01, "shipments": 2_000, "repeat": 1}
FULL = {"accounts": 16, "customers": 2_000, "latency": 0.05, "shipments": 200_000, "repeat": 3}


@dataclass
class Result:
    """One `pipeline sync` of a scenario: its command's time, and where that time went."""

    scenario: str
    streams: int
    records: int
    seconds: float  # the command, start to exit
    before_seconds: float  # command start -> first run started (start-up; queue: + deferring)
    span_seconds: float  # first run started -> last run finished (sync_runs)
    after_seconds: float  # last run finished -> command exit (queue: + noticing it)
    # Queue only: deferred -> started of the first job taken (an idle worker's pick-up), and
    # the longest a worker took between a job's end and its next job's start.
    pickup_seconds: float | None = None
    handover_seconds: float | None = None
    cpu: CpuUse | None = None  # where the machine's CPU went meanwhile
    jobs_per_worker: list[int] = field(default_factory=list)


@dataclass
class Bench:
    """What every scenario shares: the server, the simulators, the files, the checks so far."""

    args: argparse.Namespace
    server: str
    sims: Sims
    work: Path
    checks: dict[str, bool] = field(default_factory=dict)
    truths: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.args.database

    @property
    def template(self) -> str:
        return f"{self.args.database}_template"

    def env(self, url: str) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": url}

    def truth(self, key: str) -> dict[str, Any]:
        """Count and checksum of what the simulator serves for `key` (the benchmark changes no
        data, so once per stream)."""
        if key not in self.truths:
            self.truths[key] = self.sims.ask(f"truth_checksum {key}")
        return self.truths[key]

    def check(self, name: str, ok: bool) -> None:
        """A result that must hold: several runs of one scenario share the name."""
        self.checks[name] = self.checks.get(name, True) and ok


# -- configuration ------------------------------------------------------------------------


def account_names(sims: Sims) -> list[str]:
    return [name for name, table in sims.info.items() if table.get("type") == "soho"]


def fleet_config(path: Path, sims: Sims, *, backend: str, account_concurrency: int) -> Path:
    """One `[sources.soho_NN] type = "soho"` table per account the simulators serve."""
    tables = [f'[execution]\nbackend = "{backend}"\n']
    for name in account_names(sims):
        table = sims.info[name]
        tables.append(
            f"[sources.{name}]\n"
            f'type = "{table["type"]}"\n'
            f'base_url = "{table["base_url"]}"\n'
            f'token = "{table["token"]}"\n'
            f"max_concurrency = {account_concurrency}\n"
        )
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


def shipments_config(path: Path, sims: Sims, *, backend: str) -> Path:
    """bench/run.py's configuration (Afosto at 4 connections, 100 a page), on `backend`."""
    write_config(path, sims, customer_concurrency=4)
    with path.open("a", encoding="utf-8") as out:
        out.write(f'\n[execution]\nbackend = "{backend}"\n')
    return path


# -- processes ----------------------------------------------------------------------------


async def pipeline_command(
    bench: Bench, config: Path, url: str, log: Path, *args: str
) -> asyncio.subprocess.Process:
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pipeline",
            "--log-level",
            "warning",
            "--log-format",
            "json",
            "--config",
            str(config),
            *args,
            env=bench.env(url),
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


def tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-2000:]


async def fresh_database(bench: Bench) -> str:
    """An empty, migrated database: a clone of the template `pipeline db upgrade` made."""
    return await db.recreate_database(bench.server, bench.database, template=bench.template)


async def make_template(bench: Bench, config: Path) -> None:
    url = await db.recreate_database(bench.server, bench.template)
    log = bench.work / "db-upgrade.log"
    process = await pipeline_command(bench, config, url, log, "db", "upgrade")
    if await process.wait() != 0:
        raise RuntimeError(f"pipeline db upgrade exited {process.returncode}: {tail(log)}")


@contextlib.asynccontextmanager
async def workers(
    bench: Bench, config: Path, url: str, count: int, label: str
) -> AsyncIterator[list[int]]:
    """`count` `pipeline worker` processes, registered and listening for jobs (so idle) when
    this yields their pids; asked to stop (SIGTERM) when it ends."""
    started: list[tuple[asyncio.subprocess.Process, Path]] = []
    try:
        for i in range(count):
            log = bench.work / f"{label}-worker-{i + 1}.log"
            process = await pipeline_command(
                bench,
                config,
                url,
                log,
                "worker",
                "--concurrency",
                str(bench.args.worker_concurrency),
                "--grace",
                "5",
            )
            started.append((process, log))
        await _until_listening(url, started)
        yield [process.pid for process, _ in started]
    finally:
        for process, _ in started:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process, _ in started:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _until_listening(
    url: str, started: list[tuple[asyncio.subprocess.Process, Path]], seconds: float = 120
) -> None:
    """Every worker registered, and a LISTEN connection for each: a job deferred now is taken
    at once, not at the next poll."""
    conn = await asyncpg.connect(db.plain_url(url))
    try:
        deadline = time.monotonic() + seconds
        while True:
            for process, log in started:
                if process.returncode is not None:
                    raise RuntimeError(f"a worker exited {process.returncode}: {tail(log)}")
            registered = await conn.fetchval(
                f"SELECT count(*) FROM {QUEUE_SCHEMA}.procrastinate_workers"
            )
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
            if registered >= len(started) and listening >= len(started):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {seconds} s")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


# -- one scenario -------------------------------------------------------------------------


async def sync_scenario(
    bench: Bench, scenario: str, config: Path, streams: Sequence[str], worker_count: int
) -> Result:
    """A fresh database, `worker_count` idle workers (0: the local backend), then one timed
    `pipeline sync` of `streams`; the result checked against the simulators."""
    url = await fresh_database(bench)
    label = scenario.replace(" ", "-")
    log = bench.work / f"{label}-sync.log"
    async with contextlib.AsyncExitStack() as stack:
        pids = []
        if worker_count:
            pids = await stack.enter_async_context(workers(bench, config, url, worker_count, label))
        await settle(url)
        conn = await asyncpg.connect(db.plain_url(url))
        stack.push_async_callback(conn.close)
        meter = await CpuMeter.start(
            sims=bench.sims.proc.pid, watched=pids, conn=conn, database=bench.database
        )
        at = time.time()  # the clock Postgres stamps runs with, on this machine
        started = time.perf_counter()
        process = await pipeline_command(bench, config, url, log, "sync", *streams)
        await process.wait()
        seconds = time.perf_counter() - started
        cpu = await meter.stop(seconds)
        bench.check(f"{scenario}: `pipeline sync` exited 0", process.returncode == 0)
        if process.returncode != 0:
            print(f"{scenario}: sync exited {process.returncode}:\n{tail(log)}", file=sys.stderr)
        # Read while the workers still run: a stopped worker's jobs lose its id.
        queued = bool(worker_count)
        result = await _measured(conn, scenario, len(streams), at, seconds, queued=queued)
        result.cpu = cpu
        await _check_runs(bench, conn, scenario, streams, queued=queued)
        await _check_rows(bench, conn, scenario, streams)
    return result


async def _measured(
    conn: asyncpg.Connection,
    scenario: str,
    streams: int,
    at: float,
    seconds: float,
    *,
    queued: bool,
) -> Result:
    runs = await conn.fetchrow(
        "SELECT coalesce(sum(records_read), 0)::bigint AS records, "
        "extract(epoch FROM min(started_at))::float8 AS first, "
        "extract(epoch FROM max(finished_at))::float8 AS last "
        "FROM pipeline.sync_runs"
    )
    first, last = runs["first"] or at, runs["last"] or at
    result = Result(
        scenario,
        streams,
        runs["records"],
        seconds,
        before_seconds=first - at,
        span_seconds=last - first,
        after_seconds=at + seconds - last,
    )
    if queued:
        await _queue_timings(conn, result)
    return result


async def _queue_timings(conn: asyncpg.Connection, result: Result) -> None:
    """How soon workers took jobs, and how the workers shared them (procrastinate's events)."""
    jobs = await conn.fetch(
        f"""
        SELECT j.worker_id,
               extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'deferred'))::float8 AS deferred,
               extract(epoch FROM min(e.at) FILTER (WHERE e.type = 'started'))::float8 AS started,
               extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded'))::float8 AS ended
        FROM {QUEUE_SCHEMA}.procrastinate_jobs j
        JOIN {QUEUE_SCHEMA}.procrastinate_events e ON e.job_id = j.id
        GROUP BY j.id, j.worker_id
        """
    )
    started = [j for j in jobs if j["started"] is not None and j["deferred"] is not None]
    if started:
        first = min(started, key=lambda j: j["started"])
        result.pickup_seconds = first["started"] - first["deferred"]
    by_worker: dict[Any, list[Any]] = {}
    for job in started:
        by_worker.setdefault(job["worker_id"], []).append(job)
    gaps = [0.0]
    for taken in by_worker.values():
        taken.sort(key=lambda j: j["started"])
        gaps += [
            later["started"] - earlier["ended"]
            for earlier, later in itertools.pairwise(taken)
            if earlier["ended"] is not None and later["started"] >= earlier["ended"]
        ]
    result.handover_seconds = max(gaps)
    result.jobs_per_worker = sorted((len(t) for t in by_worker.values()), reverse=True)


async def _check_runs(
    bench: Bench, conn: asyncpg.Connection, scenario: str, streams: Sequence[str], *, queued: bool
) -> None:
    runs = await conn.fetch("SELECT stream, status FROM pipeline.sync_runs")
    succeeded = sorted(r["stream"] for r in runs if r["status"] == "succeeded")
    bench.check(f"{scenario}: every stream's run succeeded, once", succeeded == sorted(streams))
    if queued:
        jobs = await conn.fetch(
            f"SELECT args->>'stream' AS stream, status::text AS status "
            f"FROM {QUEUE_SCHEMA}.procrastinate_jobs"
        )
        done = sorted(j["stream"] for j in jobs if j["status"] == "succeeded")
        bench.check(
            f"{scenario}: every job succeeded",
            done == sorted(streams) and len(jobs) == len(streams),
        )


async def _check_rows(
    bench: Bench, conn: asyncpg.Connection, scenario: str, streams: Sequence[str]
) -> None:
    """Each account's live rows against what its simulator serves: count and checksum."""
    wrong = []
    for key in streams:
        instance, _, stream = key.partition(".")
        table = "afosto.shipments" if key == SHIPMENTS else f"soho.{stream}"  # declared names
        records = [
            orjson.loads(r["data"])
            for r in await conn.fetch(
                f"SELECT data FROM {table} WHERE _source = $1 AND _deleted_at IS NULL", instance
            )
        ]
        truth = bench.truth(key)
        if (len(records), checksum(records)) != (truth["count"], truth["checksum"]):
            wrong.append(f"{key}: {len(records)} rows, source {truth['count']}")
    if wrong:
        print(f"{scenario}: rows differ from the source: {'; '.join(wrong)}", file=sys.stderr)
    bench.check(f"{scenario}: every account's rows equal its source's (count, checksum)", not wrong)


# -- the run ------------------------------------------------------------------------------


def median(runs: list[Result]) -> Result:
    """The run with the median time (an odd count gives a run that happened)."""
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


@dataclass
class Scenario:
    key: str
    label: str
    config: Path
    streams: list[str]
    workers: int


def scenarios(bench: Bench) -> tuple[list[Scenario], list[Scenario]]:
    """The fleet's scenarios and the shipments' (none with `--shipments 0`)."""
    args = bench.args
    accounts = account_names(bench.sims)
    fleet = [f"{a}.customers" for a in accounts]
    config = {
        backend: fleet_config(
            bench.work / f"fleet-{backend}.toml",
            bench.sims,
            backend=backend,
            account_concurrency=args.account_concurrency,
        )
        for backend in ("local", "queue")
    }
    label = f"fleet {len(accounts)} accounts"
    fleets = [Scenario("fleet_local", f"{label}, local backend", config["local"], fleet, 0)]
    fleets += [
        Scenario(
            f"fleet_{n}", f"{label}, {n} worker{'s' if n > 1 else ''}", config["queue"], fleet, n
        )
        for n in args.workers
    ]
    if not args.shipments:
        return fleets, []
    label = f"shipments {args.shipments:,}"
    ships = [
        Scenario(
            f"shipments_{backend}",
            f"{label}, {'local backend' if backend == 'local' else '1 worker'}",
            shipments_config(bench.work / f"shipments-{backend}.toml", bench.sims, backend=backend),
            [SHIPMENTS],
            0 if backend == "local" else 1,
        )
        for backend in ("local", "queue")
    ]
    return fleets, ships


async def measure(bench: Bench) -> dict[str, list[Result]]:
    """Every scenario `--repeat` times; each key's results in round order. A round runs its
    scenarios in the reverse order of the round before, so a machine whose other load grows or
    shrinks through the run favours none of them."""
    fleets, ships = scenarios(bench)
    await make_template(bench, fleets[0].config)
    runs: dict[str, list[Result]] = {}
    for i in range(bench.args.repeat):
        print(f"round {i + 1} of {bench.args.repeat}", flush=True)
        for group in (fleets, ships):
            for scenario in group if i % 2 == 0 else reversed(group):
                result = await sync_scenario(
                    bench, scenario.label, scenario.config, scenario.streams, scenario.workers
                )
                runs.setdefault(scenario.key, []).append(result)
                print(
                    f"  {result.scenario:44} {result.seconds:7.2f} s "
                    f"(runs' span {result.span_seconds:.2f} s)",
                    flush=True,
                )
    return runs


@dataclass
class Ratio:
    """A ratio of two scenarios' times, taken within each round (the two ran minutes apart at
    most, under the same other load) and its median over the rounds."""

    name: str
    rounds: list[float]
    target: str = ""

    @property
    def value(self) -> float:
        ordered = sorted(self.rounds)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def ratio(
    runs: dict[str, list[Result]],
    name: str,
    top: str,
    bottom: str,
    span: bool = False,
    target: str = "",
) -> Ratio:
    def seconds(r: Result) -> float:
        return r.span_seconds if span else r.seconds

    pairs = zip(runs[top], runs[bottom], strict=True)
    return Ratio(name, [seconds(a) / seconds(b) for a, b in pairs], target)


def compute_ratios(runs: dict[str, list[Result]], workers: Sequence[int]) -> list[Ratio]:
    out = []
    least, most = min(workers), max(workers)
    one, many = f"fleet_{least}", f"fleet_{most}"
    if most != least:
        target = f">= {FLEET_TARGET}" if (least, most) == (1, 4) else ""
        out.append(
            ratio(runs, f"fleet: {least} worker / {most} workers time", one, many, target=target)
        )
        out.append(
            ratio(runs, f"fleet: {least} worker / {most} workers runs' span", one, many, True)
        )
        out += [
            ratio(runs, f"fleet: {least} worker / {n} workers time", one, f"fleet_{n}")
            for n in workers
            if n not in (least, most)
        ]
    out.append(ratio(runs, f"fleet: {most} workers / local backend time", many, "fleet_local"))
    if "shipments_queue" in runs:
        out.append(
            ratio(
                runs,
                "shipments: 1 worker / local backend time",
                "shipments_queue",
                "shipments_local",
                target=f"<= {SHIPMENTS_TARGET}",
            )
        )
        out.append(
            ratio(
                runs,
                "shipments: 1 worker / local backend runs' span",
                "shipments_queue",
                "shipments_local",
                True,
            )
        )
    return out


def targets(ratios: list[Ratio]) -> dict[str, bool]:
    met = {}
    for r in ratios:
        if r.target:
            op, bound = r.target.split()
            ok = r.value >= float(bound) if op == ">=" else r.value <= float(bound)
            met[f"{r.name}: {r.value:.2f} (target {r.target})"] = ok
    return met


def report(
    m: dict[str, Result],
    ratios: list[Ratio],
    checks: dict[str, bool],
    met: dict[str, bool],
) -> None:
    print(
        f"\n{'scenario':44} {'streams':>7} {'records':>9} {'seconds':>8} {'before':>7} "
        f"{'runs span':>9} {'after':>6} {'pick-up':>7} {'hand-over':>9} {'jobs per worker':>16}"
    )
    for r in m.values():
        pickup, handover = (
            "-" if value is None else f"{value:.2f}"
            for value in (r.pickup_seconds, r.handover_seconds)
        )
        shares = ",".join(map(str, r.jobs_per_worker)) or "-"
        print(
            f"{r.scenario:44} {r.streams:>7} {r.records:>9,} {r.seconds:>8.2f} "
            f"{r.before_seconds:>7.2f} {r.span_seconds:>9.2f} {r.after_seconds:>6.2f} "
            f"{pickup:>7} {handover:>9} {shares:>16}"
        )
    print(
        f"\n{'CPU seconds meanwhile':44} {'pipeline':>9} {'simulators':>10} {'postgres':>9} "
        f"{'rest':>7} {'busy cores':>10}"
    )
    for r in m.values():
        if r.cpu is not None:
            print(
                f"{r.scenario:44} {r.cpu.pipeline:>9.2f} {r.cpu.simulators:>10.2f} "
                f"{r.cpu.postgres:>9.2f} {r.cpu.rest:>7.2f} {r.cpu.busy_cores:>6.2f} of "
                f"{r.cpu.cores}"
            )
    heading = "ratio (median of each round's)"
    print(f"\n{heading:54} {'value':>6}  {'target':8} rounds")
    for each in ratios:
        rounds = ", ".join(f"{v:.2f}" for v in each.rounds)
        print(f"{each.name:54} {each.value:>6.2f}  {each.target:8} {rounds}")
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for name, ok in met.items():
        print(f"{'met   ' if ok else 'MISSED'}  {name}")


def sim_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--instances",
        f"soho={args.accounts}",
        "--customers",
        str(args.customers),
        "--latency",
        f"soho={args.latency}",
        "--shipments",
        str(args.shipments),
        "--contacts",
        "1",  # as bench/run.py: Afosto's shipments depend on its contact count
    ]


async def main(args: argparse.Namespace) -> int:
    configure_logging("json", "warning")
    server = os.environ.get("DATABASE_URL") or db.start_embedded(ROOT / ".pipeline" / "pgdata")
    work = Path(tempfile.mkdtemp(prefix="pipeline-fleet-"))
    sims = Sims(sim_flags(args))
    bench = Bench(args, server, sims, work)
    load_before = os.getloadavg()
    try:
        runs = await measure(bench)
    finally:
        sims.close()
        await db.drop_database(server, bench.database)
        await db.drop_database(server, bench.template)
    measures = {key: median(results) for key, results in runs.items()}
    ratios = compute_ratios(runs, args.workers)
    met = targets(ratios)
    report(measures, ratios, bench.checks, met)
    print(
        f"\nmachine: {os.cpu_count()} cores; 1-minute load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other work on it shows as CPU rest)"
    )
    out = Path(args.out)
    await asyncio.to_thread(out.parent.mkdir, parents=True, exist_ok=True)
    out.write_text(  # noqa: ASYNC240 - one small file at the end
        json.dumps(
            {
                "settings": {
                    k: v for k, v in vars(args).items() if k not in ("out", "database", "quick")
                },
                "measures": {k: asdict(r) for k, r in measures.items()},  # median runs
                "runs": {k: [asdict(r) for r in results] for k, results in runs.items()},
                "ratios": {
                    r.name: {"value": r.value, "rounds": r.rounds, "target": r.target}
                    for r in ratios
                },
                "checks": bench.checks,
                "targets": met,
                "machine": {  # a shared machine's other work shows here and as CPU "rest"
                    "cores": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                },
            },
            indent=2,
        )
    )
    print(f"\nJSON: {out}\nlogs: {work}")
    return 0 if all(bench.checks.values()) else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--accounts", type=int, help="Soho accounts (16; quick 4)")
    parser.add_argument("--customers", type=int, help="customers per account (2,000; quick 60)")
    parser.add_argument("--latency", type=float, help="seconds per Soho request (0.05; quick 0.01)")
    parser.add_argument(
        "--shipments", type=int, help="Afosto shipments (200,000; quick 2,000; 0: skip them)"
    )
    parser.add_argument(
        "--repeat", type=int, help="runs of each scenario, median kept (3; quick 1)"
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke run")
    parser.add_argument(
        "--workers",
        type=lambda text: sorted({int(n) for n in text.split(",")}),
        default=[1, 2, 4],
        help="worker processes per queue scenario (default 1,2,4)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=1,
        help="jobs each worker runs at once (`pipeline worker --concurrency`, default 1)",
    )
    parser.add_argument(
        "--account-concurrency",
        type=int,
        default=1,
        help="each account's max_concurrency: its requests in flight at once (default 1)",
    )
    parser.add_argument(
        "--database",
        default="pipeline_fleet",
        help="the database each scenario recreates (and <name>_template) on DATABASE_URL's server",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fleet.json"))
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
