"""Prometheus metrics moved by real syncs against the simulators, the freshness read from
`pipeline.sync_runs`, and `/metrics` served over HTTP and parsed by prometheus_client."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db, metrics
from pipeline.errors import ConfigError
from pipeline.metrics.freshness import Freshness
from pipeline.metrics.server import add_metrics_route, serving_metrics
from pipeline.run import Runner, stream_run
from pipeline.run.strategies import scan
from pipeline.sandbox import (
    DropConnection,
    HtmlPage,
    HttpError,
    RunningSimulator,
    SohoSimulator,
    Stall,
    serve,
)
from pipeline.targets import select_streams
from tests.helpers import execute, make_settings, sync

STREAM = {"stream": "soho.customers", "source": "soho"}
SYNC = {**STREAM, "kind": "sync"}


@pytest.fixture
def fresh() -> Iterator[metrics.Metrics]:
    yield metrics.reset()
    metrics.reset()


def value(m: metrics.Metrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def test_a_sync_moves_the_counters_and_a_quiet_rerun_writes_nothing(
    engine: AsyncEngine, soho: RunningSimulator, fresh: metrics.Metrics
) -> None:
    settings = make_settings(soho)
    started = time.time()

    first = (await sync(engine, settings))["soho.customers"]
    second = (await sync(engine, settings))["soho.customers"]

    assert first.status == second.status == "succeeded"
    assert value(fresh, "pipeline_records_read_total", **SYNC) == 240
    assert value(fresh, "pipeline_records_written_total", **SYNC) == 120
    assert value(fresh, "pipeline_records_quarantined_total", **SYNC) == 0
    runs = {**SYNC, "status": "succeeded"}
    assert value(fresh, "pipeline_stream_runs_total", **runs) == 2
    assert value(fresh, "pipeline_stream_run_duration_seconds_count", **SYNC) == 2
    assert value(fresh, "pipeline_stream_run_duration_seconds_sum", **SYNC) == pytest.approx(
        first.seconds + second.seconds
    )
    assert started <= value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM)
    assert value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM) <= time.time()
    assert value(fresh, "pipeline_source_info", source="soho", type="soho") == 1
    list_requests = [r for r in soho.sim.requests if r.path.endswith("/customers")]
    ok = value(fresh, "pipeline_http_requests_total", source="soho", status_class="2xx")
    assert ok == len(list_requests) > 0
    assert value(fresh, "pipeline_held_rows", **STREAM) == 0


async def test_quarantined_records_and_failed_runs_are_counted(
    engine: AsyncEngine, fresh: metrics.Metrics
) -> None:
    async with serve(SohoSimulator(customers=40, seed=46)) as running:
        sim: Any = running.sim
        sim.update_customer(sim.ids[5], email="nul\x00inside")
        settings = make_settings(running)
        quarantined = (await sync(engine, settings))["soho.customers"]
        sim.token = "another token"  # ours is refused from now on: 401
        failed = (await sync(engine, settings))["soho.customers"]

    assert quarantined.status == "succeeded" and failed.status == "failed"
    assert value(fresh, "pipeline_records_quarantined_total", **SYNC) == 1
    assert value(fresh, "pipeline_records_written_total", **SYNC) == 39
    assert value(fresh, "pipeline_stream_failures_total", **SYNC) == 1
    assert value(fresh, "pipeline_stream_runs_total", **SYNC, status="failed") == 1
    assert value(fresh, "pipeline_http_requests_total", source="soho", status_class="4xx") == 1
    # The failure does not move the last success.
    last = value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM)
    assert 0 < last < time.time()


async def test_retries_are_counted_by_reason_and_answers_by_class(
    engine: AsyncEngine, soho: RunningSimulator, fresh: metrics.Metrics
) -> None:
    faults = soho.sim.faults
    faults.add(HttpError(503), times=2, path_prefix="/api/v1/customers")
    faults.add(HttpError(429, retry_after="0"), times=1, path_prefix="/api/v1/customers")
    faults.add(HtmlPage(), times=1, path_prefix="/api/v1/customers")
    faults.add(Stall(2.0), times=1, path_prefix="/api/v1/customers")

    settings = make_settings(soho, soho_extra={"timeout_seconds": 0.5})
    outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    retries = {
        reason: value(fresh, "pipeline_http_retries_total", source="soho", reason=reason)
        for reason in ("503", "429", "malformed_body", "connection", "timeout")
    }
    assert retries == {"503": 2, "429": 1, "malformed_body": 1, "timeout": 1, "connection": 0}
    classes = {
        cls: value(fresh, "pipeline_http_requests_total", source="soho", status_class=cls)
        for cls in ("2xx", "4xx", "5xx", "error")
    }
    # The HTML page came with a 200; the stalled request answered nothing in time.
    pages = len([r for r in soho.sim.requests if r.path.endswith("/customers")])
    assert classes == {"2xx": pages - 4, "4xx": 1, "5xx": 2, "error": 1}


async def test_a_body_cut_off_is_counted_by_its_status_once(
    engine: AsyncEngine, soho: RunningSimulator, fresh: metrics.Metrics
) -> None:
    soho.sim.faults.add(DropConnection(send_headers=True), times=1, path_prefix="/api/v1/cust")

    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    assert value(fresh, "pipeline_http_retries_total", source="soho", reason="connection") == 1
    assert value(fresh, "pipeline_http_requests_total", source="soho", status_class="error") == 0
    pages = len([r for r in soho.sim.requests if r.path.endswith("/customers")])
    assert value(fresh, "pipeline_http_requests_total", source="soho", status_class="2xx") == pages


async def test_held_rows_are_gauged_while_a_rerun_holds_them(
    engine: AsyncEngine, fresh: metrics.Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run where a few records changed holds them; the gauge shows how many wait while
    the scan reads on, and none once it ends."""
    # Held writes and quiet pages' counts wait a second before they are written; on a busy
    # machine a page can take that long. An hour: only the scan's end writes them here.
    monkeypatch.setattr(scan, "HISTORY_EVERY_SECONDS", 3600.0)
    monkeypatch.setattr(stream_run, "HISTORY_EVERY_SECONDS", 3600.0)
    async with serve(SohoSimulator(customers=100, seed=47)) as running:
        sim: Any = running.sim
        settings = make_settings(running)
        await sync(engine, settings)
        for i in (3, 10, 20):  # on the first page of 25, read before the others
            sim.update_customer(sim.ids[i], email=f"changed{i}@example.com")
        seen: list[float] = []

        def watch(key: str, batch: Any, result: Any) -> None:
            seen.append(value(fresh, "pipeline_held_rows", **STREAM))

        runner = Runner(engine, progress=watch)
        [outcome] = await runner.run(select_streams(settings, []))

    assert outcome.status == "succeeded" and outcome.totals.updated == 3
    # The three quiet pages were counted while the three changes waited; then they were written.
    assert seen == [3, 3, 3, 0]
    assert value(fresh, "pipeline_held_rows", **STREAM) == 0


async def _finished_run(
    engine: AsyncEngine, stream: str, kind: str, status: str, finished: datetime
) -> None:
    await execute(
        engine,
        "INSERT INTO pipeline.sync_runs (run_id, stream, kind, status, started_at, finished_at) "
        "VALUES (:run, :stream, :kind, :status, :started, :finished)",
        run=uuid.uuid4(),
        stream=stream,
        kind=kind,
        status=status,
        started=finished - timedelta(minutes=1),
        finished=finished,
    )


async def test_last_success_is_read_from_sync_runs_and_never_moves_back(
    engine: AsyncEngine, soho: RunningSimulator, fresh: metrics.Metrics
) -> None:
    settings = make_settings(soho)
    targets = select_streams(settings, [])
    now = datetime.now(UTC).replace(microsecond=0)
    success = now - timedelta(hours=3)
    await _finished_run(engine, "soho.customers", "sync", "succeeded", success - timedelta(days=1))
    await _finished_run(engine, "soho.customers", "sync", "succeeded", success)
    await _finished_run(engine, "soho.customers", "sync", "failed", now - timedelta(hours=2))
    await _finished_run(engine, "soho.customers", "backfill", "succeeded", now - timedelta(hours=1))
    freshness = Freshness(engine, targets, every=3600)

    freshness.declare()
    assert value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM) == 0
    assert value(fresh, "pipeline_stream_failures_total", **SYNC) == 0  # there, at 0
    period = value(fresh, "pipeline_stream_schedule_period_seconds", **STREAM)
    assert period == 24 * 3600  # the default schedule, nightly
    await freshness.refresh()
    assert value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM) == (
        success.timestamp()
    )

    # Within `every` of the last read, a scrape does not read again.
    await _finished_run(engine, "soho.customers", "sync", "succeeded", now - timedelta(minutes=30))
    await freshness.refresh()
    last = value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM)
    assert last == success.timestamp()
    freshness.every = 0
    await freshness.refresh()
    last = value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM)
    assert last == (now - timedelta(minutes=30)).timestamp()

    # This process's own success is newer than what the database says: it stays.
    await sync(engine, settings)
    mine = value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM)
    await execute(engine, "DELETE FROM pipeline.sync_runs WHERE finished_at > :t", t=now)
    await freshness.refresh()
    assert value(fresh, "pipeline_stream_last_success_timestamp_seconds", **STREAM) == mine


async def test_a_database_that_does_not_answer_leaves_the_values_and_the_scrape_works(
    soho: RunningSimulator, fresh: metrics.Metrics, log_text: Any
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = db.create_engine(f"postgresql://postgres@127.0.0.1:{port}/none", pool_size=1)
    targets = select_streams(make_settings(soho), [])
    freshness = Freshness(engine, targets)
    freshness.declare()
    fresh.set_last_success("soho.customers", "soho", 1_700_000_000.0)
    try:
        async with serving_metrics("127.0.0.1", 0, refresh=freshness.refresh) as bound:
            text = await _get(f"http://127.0.0.1:{bound}/metrics")
    finally:
        await engine.dispose()

    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = families["pipeline_stream_last_success_timestamp_seconds"].samples
    assert sample.value == 1_700_000_000.0
    assert "metrics_last_success_not_read" in log_text()


async def _get(url: str, accept: str | None = None) -> str:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def test_metrics_served_over_http_parse_in_both_formats(
    engine: AsyncEngine, soho: RunningSimulator, fresh: metrics.Metrics
) -> None:
    settings = make_settings(soho)
    await sync(engine, settings)
    freshness = Freshness(engine, select_streams(settings, []))
    freshness.declare()

    async with serving_metrics("127.0.0.1", 0, refresh=freshness.refresh) as port:
        url = f"http://127.0.0.1:{port}/metrics"
        text = await _get(url)
        open_text = await _get(url, accept="application/openmetrics-text; version=1.0.0")

    families = {f.name: f for f in text_string_to_metric_families(text)}
    [read] = [
        s
        for s in families["pipeline_records_read"].samples
        if s.labels["stream"] == STREAM["stream"]
    ]
    assert read.value == 120 and read.name == "pipeline_records_read_total"
    assert families["pipeline_stream_run_duration_seconds"].type == "histogram"
    assert open_text.rstrip().endswith("# EOF")
    open_families = {f.name: f for f in openmetrics_families(open_text)}
    assert open_families.keys() == families.keys()


async def test_a_taken_port_is_a_config_error_naming_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--metrics-port {port}"):
            async with serving_metrics("127.0.0.1", port):
                pass


async def test_the_route_mounts_on_another_application_with_its_refresh(
    fresh: metrics.Metrics,
) -> None:
    refreshed: list[bool] = []

    async def refresh() -> None:
        refreshed.append(True)
        fresh.set_last_success("x.y", "x", 1.0)

    app = web.Application()
    add_metrics_route(app, refresh=refresh)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        text = await _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await runner.cleanup()

    assert refreshed == [True]
    assert 'pipeline_stream_last_success_timestamp_seconds{source="x",stream="x.y"} 1.0' in text
