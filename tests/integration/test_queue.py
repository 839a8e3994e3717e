"""The queue backend with real processes: `pipeline worker`s, `pipeline sync` queuing and
waiting, `pipeline schedule` deferring, on one Postgres; and what each fault leaves behind."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.sandbox import SohoSimulator, ValomniaSimulator
from tests.helpers import live_rows, rows, scalar
from tests.queue_procs import (
    at_least,
    finished_jobs,
    jobs,
    pages_running,
    processes,
    queue_processes,
    runs_of,
    slow_valomnia,
    until,
)


async def test_sync_runs_on_the_workers_and_reports_as_a_local_sync(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=300, seed=81, latency=0.01)
    valomnia_sim = ValomniaSimulator(authorities=200, seed=82, latency=0.01)
    async with queue_processes(tmp_path, database_url, soho_sim, valomnia_sim) as procs:
        await procs.worker()
        await procs.worker()
        code, output = await procs.run("sync")
        assert code == 0, procs.all_output()
        worker_lines = [
            json.loads(line)  # every line JSON, the queue library's too
            for name, _, log in procs.started
            if name.startswith("worker")
            for line in log.read_text(encoding="utf-8").splitlines()
        ]

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
    pages = [line for line in worker_lines if line["event"] == "page_loaded"]
    assert pages and all({"run_id", "stream", "job_id"} <= set(line) for line in pages)


async def _watermark(engine: AsyncEngine, stream: str) -> datetime | None:
    return await scalar(
        engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = :s", s=stream
    )


async def test_a_worker_killed_mid_job_has_its_job_retried_by_another_from_its_checkpoint(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=20, seed=83)
    valomnia_sim = slow_valomnia(84)
    stream = "valomnia.authorities"
    async with queue_processes(tmp_path, database_url, soho_sim, valomnia_sim) as procs:
        doomed = await procs.worker()
        code, _ = await procs.run("sync", "--no-wait", stream)
        assert code == 0
        await until(lambda: pages_running(engine, stream), what="pages", seconds=30)
        await until(lambda: at_least(pages_running(engine, stream), 4), what="4 pages")
        doomed.kill()  # SIGKILL: no goodbye, no status written, heartbeat stops
        await doomed.wait()
        committed = await _watermark(engine, stream)
        assert committed is not None

        survivor = await procs.worker()
        finished = await until(lambda: finished_jobs(engine), what="the job", seconds=60)
        assert [j.status for j in finished] == ["succeeded"], procs.all_output()
        # Put back once (counted), then finished (counted): the killed attempt left no count.
        assert finished[0].attempts == 2
        assert "stalled_job_retried" in procs.output(survivor)

    assert await live_rows(engine, stream) == {a["id"]: a for a in valomnia_sim.truth()}
    killed, retried = await runs_of(engine, stream)
    assert killed.status == "interrupted" and "process died" in killed.error
    assert retried.status == "succeeded"
    assert retried.watermark_before == committed  # resumed where the killed run committed
    assert killed.run_id == retried.run_id  # one job, one run id, two attempts


async def test_sigterm_hands_the_job_back_at_a_page_boundary(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=20, seed=85)
    valomnia_sim = slow_valomnia(86)
    stream = "valomnia.authorities"
    async with queue_processes(tmp_path, database_url, soho_sim, valomnia_sim) as procs:
        stopping = await procs.worker(grace=5)
        assert (await procs.run("sync", "--no-wait", stream))[0] == 0
        await until(lambda: at_least(pages_running(engine, stream), 3), what="3 pages")
        stopping.send_signal(signal.SIGTERM)
        started = time.monotonic()
        await asyncio.wait_for(stopping.wait(), 10)
        assert time.monotonic() - started < 5
        assert stopping.returncode == 0, procs.output(stopping)
        [waiting] = await jobs(engine)
        assert (waiting.status, waiting.attempts) == ("todo", 1)  # back in the queue
        [stopped] = await runs_of(engine, stream)
        assert stopped.status == "interrupted"
        assert "page boundary" in stopped.error
        committed = await _watermark(engine, stream)

        await procs.worker()
        finished = await until(lambda: finished_jobs(engine), what="the job", seconds=60)
        assert [j.status for j in finished] == ["succeeded"], procs.all_output()

    assert await live_rows(engine, stream) == {a["id"]: a for a in valomnia_sim.truth()}
    _, resumed = await runs_of(engine, stream)
    assert resumed.status == "succeeded"
    assert resumed.watermark_before == committed


async def test_two_schedulers_defer_each_firing_once(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=30, seed=87)
    async with queue_processes(tmp_path, database_url, soho_sim, schedule="*/2 * * * * *") as procs:
        worker = await procs.worker()
        await until(lambda: _mentions(procs, worker, "worker_started"), what="the worker")
        schedulers = [await procs.start("schedule"), await procs.start("schedule")]
        for scheduler in schedulers:
            await until(lambda s=scheduler: _mentions(procs, s, "job_scheduled"), what="up")
        await asyncio.sleep(7)
        for scheduler in schedulers:
            scheduler.send_signal(signal.SIGTERM)
        for scheduler in schedulers:
            await asyncio.wait_for(scheduler.wait(), 15)

        async def all_done() -> list[Any]:
            found = await jobs(engine)
            return found if all(j.status == "succeeded" for j in found) else []

        done = await until(all_done, what="every job", seconds=30)

    firings = await rows(
        engine,
        "SELECT (args->>'timestamp')::bigint AS at, count(*) AS jobs "
        "FROM pipeline_queue.procrastinate_jobs GROUP BY 1 ORDER BY 1",
    )
    assert 3 <= len(firings) <= 6, firings  # a firing every 2 s for 7 s and more
    assert all(f.jobs == 1 for f in firings), firings  # never one per scheduler
    assert len(done) == len(firings)
    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}


async def test_a_job_queued_before_the_scheduler_restarts_is_neither_lost_nor_doubled(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=30, seed=88)
    async with queue_processes(tmp_path, database_url, soho_sim, schedule="*/2 * * * * *") as procs:
        for _ in range(2):  # no worker yet: the first firing's job waits
            scheduler = await procs.start("schedule")
            await until(lambda: jobs(engine), what="a job", seconds=10)
            await asyncio.sleep(2.5)  # another firing or more, while one job waits
            scheduler.send_signal(signal.SIGTERM)
            await asyncio.wait_for(scheduler.wait(), 15)
            assert [j.status for j in await jobs(engine)] == ["todo"]

        _, output = await procs.run("status", "--json")
        [customers] = [
            s for s in json.loads(output[output.index("[") :]) if s["key"] == "soho.customers"
        ]
        assert customers["jobs"] == {"waiting": 1, "running": 0, "failed": 0}

        await procs.worker()
        finished = await until(lambda: finished_jobs(engine), what="the job", seconds=30)
        assert [j.status for j in finished] == ["succeeded"]
    assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}


async def test_sync_joins_a_job_already_waiting_for_the_stream(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=30, seed=89)
    async with queue_processes(tmp_path, database_url, soho_sim) as procs:
        code, first = await procs.run("sync", "--no-wait", "soho.customers")
        assert code == 0 and "queued" in first
        waiting = await procs.start("sync", "customers")  # waits for the queued job
        await until(lambda: _mentions(procs, waiting, "already waiting"), what="join")
        await procs.worker()
        await asyncio.wait_for(waiting.wait(), 30)
        assert waiting.returncode == 0, procs.all_output()
        assert "succeeded" in procs.output(waiting)
    assert [j.status for j in await jobs(engine)] == ["succeeded"]
    assert len(await runs_of(engine, "soho.customers")) == 1


async def _mentions(procs: Any, process: Any, text: str) -> bool:
    return text in procs.output(process)


async def test_a_worker_needs_the_queue_backend(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[sources.soho]\nbase_url = "http://127.0.0.1:9/api/v1"\ntoken = "t"\n')
    async with processes(config, {"DATABASE_URL": database_url}, tmp_path) as procs:
        code, output = await procs.run("worker")
    assert code == 2
    assert 'backend = "queue"' in output


async def test_a_worker_outlives_a_postgres_restart(tmp_path: Path) -> None:
    """A real restart (`pg_ctl restart -m fast`) of a server of the test's own, under a worker
    running a job: the worker connects again, the interrupted job is retried to the end, and
    new jobs run."""
    import pgserver
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri()
        engine = db.create_engine(url)
        await db.upgrade(engine)
        soho_sim = SohoSimulator(customers=40, seed=90)
        valomnia_sim = slow_valomnia(91)
        stream = "valomnia.authorities"
        async with queue_processes(tmp_path, url, soho_sim, valomnia_sim) as procs:
            worker = await procs.worker()
            assert (await procs.run("sync", "--no-wait", stream))[0] == 0
            await until(lambda: at_least(pages_running(engine, stream), 3), what="3 pages")
            await engine.dispose()
            await asyncio.to_thread(
                pg_ctl,
                ["-w", "-m", "fast", "restart"],
                pgdata=server.pgdata,
                user=server.system_user,
            )
            finished = await until(
                lambda: finished_jobs(engine), what="the job after the restart", seconds=60
            )
            assert [j.status for j in finished] == ["succeeded"], procs.all_output()
            # The run the restart broke failed as a database error and ran again.
            # (`failed` when it could say so, `interrupted` when the restart also took the
            # chance to record its end).
            broken, *_, last = await runs_of(engine, stream)
            assert broken.status in ("failed", "interrupted"), broken
            assert last.status == "succeeded"

            code, _ = await procs.run("sync", "soho.customers")  # a new job, same worker
            assert code == 0, procs.all_output()
            assert worker.returncode is None  # the one worker did both
        assert await live_rows(engine, stream) == {a["id"]: a for a in valomnia_sim.truth()}
        assert await live_rows(engine, "soho.customers") == {c["id"]: c for c in soho_sim.truth()}
        await engine.dispose()
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_backfill_slices_are_jobs_the_workers_run_side_by_side(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    soho_sim = SohoSimulator(customers=20, seed=92)
    valomnia_sim = ValomniaSimulator(authorities=400, seed=93, latency=0.02)
    stream = "valomnia.authorities"
    async with queue_processes(tmp_path, database_url, soho_sim, valomnia_sim) as procs:
        await procs.worker(concurrency=2)
        await procs.worker(concurrency=2)
        code, output = await procs.run("backfill", stream, "--since", "2000-01-01", "--slices", "3")
        assert code == 0, procs.all_output()
    finished = await jobs(engine)
    assert [j.status for j in finished] == ["succeeded"] * 3
    assert len({j.worker_id for j in finished}) >= 1
    assert await live_rows(engine, stream) == {a["id"]: a for a in valomnia_sim.truth()}
    assert output.count("succeeded") >= 3 and "[2000-01-01" in output
