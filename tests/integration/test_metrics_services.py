"""`/metrics` of real `pipeline worker` and `pipeline schedule` processes (`--metrics-port`):
fetched over HTTP, parsed by prometheus_client, moved by the syncs they run, and right about
the last success from the first scrape after a start."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SohoSimulator, serve
from tests.helpers import execute, write_config
from tests.queue_procs import QUEUE_EXECUTION, Processes, processes, until
from tests.source_limits import expect_config

STREAM = {"stream": "soho.customers", "source": "soho"}
SYNC = {**STREAM, "kind": "sync"}


def _config(path: Path, soho: RunningSimulator, **execution: Any) -> Path:
    return write_config(
        path,
        {
            "execution": execution,
            "sources.soho": {"base_url": f"{soho.url}/api/v1", "token": "${TEST_SOHO_TOKEN}"},
            "sources.soho.streams.customers": {"schedule": "*/2 * * * * *"},
        },
    )


async def _metrics_url(procs: Processes, process: asyncio.subprocess.Process) -> str:
    """The address the process logged it serves /metrics at (it listens on a free port)."""

    async def logged() -> str | None:
        if process.returncode is not None:
            raise AssertionError(procs.output(process))
        for line in procs.output(process).splitlines():
            if line.startswith("{") and json.loads(line).get("event") == "metrics_serving":
                return str(json.loads(line)["url"])
        return None

    return await until(logged, seconds=30, what="metrics_serving")


async def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, by name and labels; the text must parse."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_a_worker_serves_metrics_that_start_from_sync_runs_and_move_with_its_jobs(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    succeeded = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    await execute(
        engine,
        "INSERT INTO pipeline.sync_runs (run_id, stream, kind, status, started_at, finished_at) "
        "VALUES (:run, 'soho.customers', 'sync', 'succeeded', :started, :finished)",
        run=uuid.uuid4(),
        started=succeeded - timedelta(minutes=5),
        finished=succeeded,
    )
    sim = SohoSimulator(customers=90, seed=91)
    async with serve(sim) as soho:
        config = _config(tmp_path / "pipeline.toml", soho, **QUEUE_EXECUTION)
        env = {"DATABASE_URL": database_url, "TEST_SOHO_TOKEN": sim.token}
        expect_config(config, env, soho)
        async with processes(config, env, tmp_path) as procs:
            worker = await procs.start("worker", "--concurrency", "2", "--metrics-port", "0")
            url = await _metrics_url(procs, worker)

            before = await _scrape(url)
            last = "pipeline_stream_last_success_timestamp_seconds"
            assert _get(before, last, **STREAM) == succeeded.timestamp()
            assert _get(before, "pipeline_records_read_total", **SYNC) == 0
            assert _get(before, "pipeline_stream_failures_total", **SYNC) == 0
            period = _get(before, "pipeline_stream_schedule_period_seconds", **STREAM)
            assert period == 2

            code, output = await procs.run("sync")
            assert code == 0, output
            after = await _scrape(url)

    assert _get(after, "pipeline_records_read_total", **SYNC) == 90
    assert _get(after, "pipeline_records_written_total", **SYNC) == 90
    runs = _get(after, "pipeline_stream_runs_total", **SYNC, status="succeeded")
    assert runs == 1
    assert _get(after, "pipeline_stream_run_duration_seconds_count", **SYNC) == 1
    ok = _get(after, "pipeline_http_requests_total", source="soho", status_class="2xx")
    assert ok is not None and ok >= 4  # 90 customers, 25 a page
    assert (_get(after, last, **STREAM) or 0) > succeeded.timestamp()


async def test_the_local_scheduler_serves_metrics_of_the_runs_it_makes(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    sim = SohoSimulator(customers=30, seed=92)
    async with serve(sim) as soho:
        config = _config(tmp_path / "pipeline.toml", soho, backend="local")
        env = {"DATABASE_URL": database_url, "TEST_SOHO_TOKEN": sim.token}
        expect_config(config, env, soho)
        async with processes(config, env, tmp_path) as procs:
            scheduler = await procs.start("schedule", "--grace", "5", "--metrics-port", "0")
            url = await _metrics_url(procs, scheduler)

            async def ran() -> dict[Any, float] | None:
                samples = await _scrape(url)
                done = _get(samples, "pipeline_stream_runs_total", **SYNC, status="succeeded")
                return samples if done else None

            samples = await until(ran, seconds=30, every=0.5, what="a scheduled run")
            scheduler.send_signal(signal.SIGTERM)
            await asyncio.wait_for(scheduler.wait(), 15)

    assert scheduler.returncode == 0, procs.output(scheduler)
    assert _get(samples, "pipeline_records_read_total", **SYNC) == 30 * _get(
        samples, "pipeline_stream_runs_total", **SYNC, status="succeeded"
    )
