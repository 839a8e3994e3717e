"""The dashboard's pages and their JSON twins, through aiohttp's test client, on a database
filled by real syncs (tests/dashboard_state.py), read by a login in `pipeline_dashboard`."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from markupsafe import escape
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.dashboard import build_app
from pipeline.dashboard.app import ENGINE
from pipeline.dashboard.auth import check_bind
from pipeline.errors import ConfigError
from pipeline.queue.app import TASK_NAME
from pipeline.sandbox import DigiLockerSimulator, SohoSimulator, ValomniaSimulator, serve
from pipeline.settings import ExecutionSettings
from tests.browser import Browser, find_chromium, save
from tests.dashboard_state import (
    FAILED,
    LATE,
    MARKUP,
    NEW_FIELD,
    QUARANTINED,
    STOPPED_COLUMN,
    DashboardState,
    build_state,
)
from tests.helpers import execute, rows, scalar, write_config
from tests.roles import login_in


@pytest.fixture(scope="module")
async def state_db(
    pg_server_url: str, template_database: str
) -> AsyncIterator[tuple[str, DashboardState]]:
    """One database for the module: the pages only read it."""
    name = f"pipeline_test_dashboard_{os.getpid()}"
    url = await db.recreate_database(pg_server_url, name, template=template_database)
    engine = db.create_engine(url, pool_size=2)
    try:
        async with AsyncExitStack() as stack:
            sims = {
                "soho": await stack.enter_async_context(
                    serve(SohoSimulator(customers=120, seed=11))
                ),
                "valomnia": await stack.enter_async_context(
                    serve(ValomniaSimulator(authorities=230, seed=12))
                ),
                "digilocker": await stack.enter_async_context(
                    serve(DigiLockerSimulator(issuers=12, seed=61))
                ),
            }
            state = await build_state(engine, sims)
    finally:
        await engine.dispose()
    yield url, state
    await db.drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
async def dashboard_url(state_db: tuple[str, DashboardState]) -> AsyncIterator[str]:
    async with login_in(state_db[0], "pipeline_dashboard") as url:
        yield url


@pytest.fixture
async def admin(state_db: tuple[str, DashboardState]) -> AsyncIterator[AsyncEngine]:
    """The owner's engine: the oracle the pages are compared with."""
    engine = db.create_engine(state_db[0], pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def reader(dashboard_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(dashboard_url, pool_size=3, read_only=True)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(
    reader: AsyncEngine, state_db: tuple[str, DashboardState]
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(build_app(reader, state_db[1].settings))) as client:
        yield client


async def _get(client: TestClient[Any, Any], path: str, status: int = 200) -> str:
    response = await client.get(path)
    text = await response.text()
    assert response.status == status, f"{path}: {response.status} {text[:500]}"
    return text


async def _json(client: TestClient[Any, Any], path: str, status: int = 200) -> Any:
    response = await client.get(path)
    assert response.status == status, f"{path}: {response.status} {await response.text()}"
    return await response.json()


def _cells(overview: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["key"]: c for row in overview["instances"] for c in row["cells"]}


# ---- overview --------------------------------------------------------------------------------


async def test_overview_says_failed_and_late_and_its_counts_equal_the_tables(
    client: TestClient[Any, Any], admin: AsyncEngine
) -> None:
    cells = _cells(await _json(client, "/api/overview"))

    assert cells[FAILED]["state"] == "failed" and cells[FAILED]["error"]
    assert cells[LATE]["state"] == "late" and cells[LATE]["late"] is True
    assert cells[QUARANTINED]["state"] == "ok"
    assert {k for k, c in cells.items() if c["state"] in ("failed", "late")} == {FAILED, LATE}
    assert {row["instance"] for row in (await _json(client, "/api/overview"))["instances"]} == {
        "digilocker",
        "soho",
        "valomnia",
    }
    for key, cell in cells.items():
        instance, stream = key.split(".")
        live, deleted = (
            await rows(
                admin,
                "SELECT count(*) FILTER (WHERE _deleted_at IS NULL) AS live, "
                f"count(*) FILTER (WHERE _deleted_at IS NOT NULL) AS deleted FROM {instance}.{stream}",
            )
        )[0]
        assert (cell["live_rows"], cell["deleted_rows"]) == (live, deleted), key
        quarantined = await scalar(
            admin, "SELECT count(*) FROM pipeline.quarantine WHERE stream = :k", k=key
        )
        assert cell["quarantined"] == quarantined, key
        [last] = await rows(
            admin,
            "SELECT records_read, inserted, updated, deleted FROM pipeline.sync_runs "
            "WHERE stream = :k AND kind = 'sync' ORDER BY started_at DESC LIMIT 1",
            k=key,
        )
        counts = cell["last_run"]
        assert (counts["read"], counts["inserted"], counts["updated"], counts["deleted"]) == tuple(
            last
        ), key
        assert counts["written"] == last.inserted + last.updated + last.deleted
        next_run = datetime.fromisoformat(cell["next_run"])
        assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1), key
    assert cells[QUARANTINED]["quarantined"] > 0
    assert cells[QUARANTINED]["last_run"]["updated"] == 8  # the customers changed lately

    page = await _get(client, "/")
    states = dict(re.findall(r'data-key="([^"]+)" data-state="([^"]+)"', page))
    assert states == {key: cell["state"] for key, cell in cells.items()}
    assert 'class="cell failed"' in page and 'class="cell late"' in page
    assert "1 failed" in page and "1 late" in page


async def test_a_stream_page_shows_its_runs_charts_state_and_quarantine_by_reason(
    client: TestClient[Any, Any], admin: AsyncEngine
) -> None:
    key = quote(QUARANTINED, safe="")
    data = await _json(client, f"/api/streams/{key}")

    runs = await rows(
        admin, "SELECT id FROM pipeline.sync_runs WHERE stream = :k ORDER BY id", k=QUARANTINED
    )
    assert sorted(r["id"] for r in data["history"]) == [r.id for r in runs]
    assert [r["id"] for r in data["runs"]] == [r.id for r in runs]  # all in the 30 days
    [state] = data["state"]
    watermark = await scalar(
        admin, "SELECT watermark FROM pipeline.stream_state WHERE stream = :k", k=QUARANTINED
    )
    assert datetime.fromisoformat(state["watermark"]) == watermark
    total = await scalar(
        admin, "SELECT count(*) FROM pipeline.quarantine WHERE stream = :k", k=QUARANTINED
    )
    assert data["quarantined"] == total == sum(r["records"] for r in data["quarantine"])
    reasons = {r["reason"] for r in data["quarantine"]}
    # grouped by kind: the refused values are left out
    assert reasons == {
        "not an ISO-8601 timestamp: …",  # the cursor, updated_at
        "field 'created_at': timestamp without a time zone: …",
    }
    assert not any("yesterday" in r for r in reasons)

    page = await _get(client, f"/streams/{key}")
    assert page.count('<svg class="chart"') == 2
    assert page.count('class="line series-') == 3  # read, written; duration
    assert "not an ISO-8601 timestamp: …" in html.unescape(page)

    failed = await _get(client, f"/streams/{quote(FAILED, safe='')}")
    error = await scalar(
        admin,
        "SELECT error FROM pipeline.sync_runs WHERE stream = :k AND status = 'failed'",
        k=FAILED,
    )
    assert error and html.escape(error, quote=False) in failed


async def test_unknown_streams_and_bad_parameters_are_refused_clearly(
    client: TestClient[Any, Any],
) -> None:
    for path in ("/streams/nosuch.stream", "/api/streams/nosuch.stream"):
        assert "no stream 'nosuch.stream'" in await _get(client, path, status=404)
    assert "give a record id" in await _get(client, "/api/quarantine?before=x", status=400)


# ---- quarantine ------------------------------------------------------------------------------


async def test_quarantine_filters_by_stream_and_reason_and_shows_records_redacted(
    client: TestClient[Any, Any], admin: AsyncEngine, state_db: tuple[str, DashboardState]
) -> None:
    secret = state_db[1].secret
    stored = await rows(admin, "SELECT id, stream, reason, raw FROM pipeline.quarantine")
    assert stored and not any(secret in r.raw for r in stored), "stored redacted"
    assert any("***" in r.raw for r in stored)

    everything = await _json(client, "/api/quarantine")
    assert everything["matching"] == len(stored)
    assert {r["id"] for r in everything["records"]} == {r.id for r in stored}

    kind = "not an ISO-8601 timestamp: …"
    chosen = await _json(
        client, f"/api/quarantine?stream={quote(QUARANTINED)}&reason={quote(kind)}"
    )
    expected = {
        r.id
        for r in stored
        if r.stream == QUARANTINED and r.reason.startswith("not an ISO-8601 timestamp: '")
    }
    assert expected and {r["id"] for r in chosen["records"]} == expected
    assert chosen["matching"] == len(expected)
    assert all(r["kind"] == kind for r in chosen["records"])
    assert (await _json(client, "/api/quarantine?stream=nosuch.stream"))["matching"] == 0

    for path in ("/quarantine", "/api/quarantine", f"/streams/{quote(QUARANTINED, safe='')}"):
        assert secret not in await _get(client, path)
    page = await _get(client, "/quarantine")
    assert "***" in page
    assert MARKUP not in page and str(escape(MARKUP)) in page  # markup shown, never run


async def test_quarantine_pages_newest_first_and_continues_below_the_last_id(
    client: TestClient[Any, Any], admin: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.dashboard import quarantine

    monkeypatch.setattr(quarantine, "QUARANTINE_ROWS", 2)
    ids = [r.id for r in await rows(admin, "SELECT id FROM pipeline.quarantine ORDER BY id DESC")]
    seen: list[int] = []
    path = "/api/quarantine"
    while True:
        page = await _json(client, path)
        seen += [r["id"] for r in page["records"]]
        if page["next_before"] is None:
            break
        path = f"/api/quarantine?before={page['next_before']}"
    assert seen == ids and len(ids) > 2


# ---- drift -----------------------------------------------------------------------------------


async def test_drift_lists_fields_no_column_reads_and_columns_null_lately(
    client: TestClient[Any, Any], admin: AsyncEngine
) -> None:
    data = await _json(client, "/api/drift")
    tables = {t["table"]: t for t in data["tables"]}
    customers = tables["soho.customers"]
    assert customers["sampled"] is False and customers["streams"] == [QUARANTINED]
    fields = {f["name"]: f for f in customers["fields"]}
    carrying = await scalar(
        admin,
        "SELECT count(*) FROM soho.customers WHERE data ? :f AND _deleted_at IS NULL",
        f=NEW_FIELD,
    )
    assert fields[NEW_FIELD]["rows"] == fields[NEW_FIELD]["estimated_rows"] == carrying == 30
    first_seen = await scalar(
        admin, "SELECT min(_synced_at) FROM soho.customers WHERE data ? :f", f=NEW_FIELD
    )
    assert datetime.fromisoformat(fields[NEW_FIELD]["first_seen"]) == first_seen
    assert "email" not in fields and "profile" not in fields  # read by columns
    nulls = {n["name"]: n for n in customers["null_columns"]}
    assert nulls[STOPPED_COLUMN]["recent_rows"] == 8
    assert nulls[STOPPED_COLUMN]["filled_before"] > 0
    assert "email" not in nulls
    assert tables["afosto.contacts"]["rows_read"] == 0  # not synced: nothing to say

    live = await scalar(admin, "SELECT count(*) FROM soho.customers WHERE _deleted_at IS NULL")
    page = html.unescape(await _get(client, "/drift"))
    assert NEW_FIELD in page and f"{live:,} live rows, all read" in page


async def test_drift_samples_a_large_table_and_estimates_within_a_tenth(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.dashboard import drift
    from pipeline.sources import SOURCES

    await execute(
        engine,
        "INSERT INTO soho.customers (_source, id, email, data, _hash, _run_id, _synced_at) "
        "SELECT 'soho', n, 'c' || n || '@example.com', "
        "jsonb_build_object('id', n, 'email', 'c' || n || '@example.com') "
        "|| CASE WHEN n % 4 = 0 THEN '{\"extra\": 1}'::jsonb ELSE '{}' END, "
        "'\\x00', gen_random_uuid(), now() - interval '30 days' "
        "FROM generate_series(1, 40000) n",
    )
    await execute(engine, "ANALYZE soho.customers")
    monkeypatch.setattr(drift, "SAMPLE_ROWS", 4000)
    stream = SOURCES["soho"].streams[0]
    found = await drift.table_drift(engine, "soho", stream, [], datetime.now(UTC))
    assert found.sampled and 2000 <= found.rows_read <= 8000
    assert abs(found.estimated_rows - 40000) <= 4000
    [extra] = found.fields
    assert extra.name == "extra" and abs(extra.estimated_rows - 10000) <= 1000


# ---- jobs ------------------------------------------------------------------------------------


async def test_jobs_page_counts_jobs_per_stream_with_the_queue_backend(
    engine: AsyncEngine, database_url: str, state_db: tuple[str, DashboardState]
) -> None:
    settings = state_db[1].settings
    async with engine.begin() as conn:
        # procrastinate's triggers name its tables unqualified: its connections' search path
        await conn.execute(sa.text("SET LOCAL search_path TO pipeline_queue"))
        await conn.execute(
            sa.text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                "VALUES ('streams', :t, '{\"stream\": \"soho.customers\"}', 'todo'), "
                "('streams', :t, '{\"stream\": \"soho.customers\"}', 'failed'), "
                "('streams', :t, '{\"stream\": \"valomnia.authorities\"}', 'doing')"
            ),
            {"t": TASK_NAME},
        )
    async with login_in(database_url, "pipeline_dashboard") as url:
        reader = db.create_engine(url, pool_size=2, read_only=True)
        try:
            local = build_app(reader, settings)
            async with TestClient(TestServer(local)) as client:
                assert (await _json(client, "/api/jobs")) == {"queue": False, "streams": []}
                assert "not configured" in await _get(client, "/jobs")
                assert 'href="/jobs"' not in await _get(client, "/")
            queued = dataclasses.replace(settings, execution=ExecutionSettings(backend="queue"))
            async with TestClient(TestServer(build_app(reader, queued))) as client:
                data = await _json(client, "/api/jobs")
                jobs = {r["stream"]: r["jobs"] for r in data["streams"]}
                assert jobs["soho.customers"] == {"waiting": 1, "running": 0, "failed": 1}
                assert jobs["valomnia.authorities"] == {"waiting": 0, "running": 1, "failed": 0}
                assert jobs[FAILED] == {"waiting": 0, "running": 0, "failed": 0}
                assert 'href="/jobs"' in await _get(client, "/")
                cells = _cells(await _json(client, "/api/overview"))
                assert cells["soho.customers"]["jobs"] == jobs["soho.customers"]
        finally:
            await reader.dispose()


# ---- read only, token ------------------------------------------------------------------------


async def test_the_dashboard_connection_cannot_write(
    client: TestClient[Any, Any], reader: AsyncEngine, state_db: tuple[str, DashboardState]
) -> None:
    """Two walls: every transaction is READ ONLY, and the role may not write anyway."""
    assert client.app is not None and client.app[ENGINE] is reader
    insert = sa.text(
        "INSERT INTO pipeline.sync_runs (run_id, stream, status) "
        "VALUES (gen_random_uuid(), 'x', 'running')"
    )
    async with reader.connect() as conn:
        assert (await conn.execute(sa.text("SHOW transaction_read_only"))).scalar() == "on"
        with pytest.raises(sa.exc.DBAPIError) as read_only:
            await conn.execute(insert)
    assert isinstance(read_only.value.orig.__cause__, asyncpg.ReadOnlySQLTransactionError)
    async with reader.connect() as conn:
        await conn.execute(sa.text("SET default_transaction_read_only = off"))
        await conn.commit()
        with pytest.raises(sa.exc.DBAPIError) as denied:
            await conn.execute(insert)
    assert isinstance(denied.value.orig.__cause__, asyncpg.InsufficientPrivilegeError)
    # Under a role that may write (the owner's URL), the transactions still refuse.
    owner = db.create_engine(state_db[0], pool_size=1, read_only=True)
    try:
        async with owner.connect() as conn:
            with pytest.raises(sa.exc.DBAPIError) as refused:
                await conn.execute(insert)
        assert isinstance(refused.value.orig.__cause__, asyncpg.ReadOnlySQLTransactionError)
    finally:
        await owner.dispose()


async def test_a_token_is_asked_of_every_request_and_metrics_mount_behind_it(
    reader: AsyncEngine, state_db: tuple[str, DashboardState]
) -> None:
    token = "a-long-random-dashboard-token-0123456789"

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="pipeline_up 1\n")

    app = build_app(reader, state_db[1].settings, token=token, metrics=metrics)
    async with TestClient(TestServer(app)) as client:
        for path in ("/", "/api/overview", "/drift", "/static/dashboard.css", "/metrics"):
            response = await client.get(path)
            assert response.status == 401, path
            assert "Bearer" in response.headers["WWW-Authenticate"]
        wrong = await client.get("/api/overview", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/overview", headers=bearer)).status == 200
        assert await (await client.get("/metrics", headers=bearer)).text() == "pipeline_up 1\n"

        first = await client.get(f"/quarantine?stream=x&token={token}", allow_redirects=False)
        assert first.status == 303
        assert first.headers["Location"] == "/quarantine?stream=x"
        cookie = first.cookies["pipeline_dashboard"]
        assert token not in cookie.value and cookie["httponly"]
        # the client keeps the cookie: the page now opens without the token
        assert (await client.get("/quarantine")).status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/quarantine")).status == 401


def test_a_bind_beyond_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.10", "dashboard.example.com"):
        with pytest.raises(ConfigError, match="PIPELINE_DASHBOARD_TOKEN"):
            check_bind(host, None)
        check_bind(host, "token")


def test_the_command_refuses_a_public_bind_without_a_token_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    monkeypatch.delenv("PIPELINE_DASHBOARD_TOKEN", raising=False)
    assert main(["dashboard", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0" in err and "PIPELINE_DASHBOARD_TOKEN" in err


async def test_every_page_answers_html_and_json_with_no_outside_resource(
    client: TestClient[Any, Any],
) -> None:
    pages = ["/", f"/streams/{quote(QUARANTINED, safe='')}", "/quarantine", "/drift", "/jobs"]
    for path in pages:
        response = await client.get(path)
        assert response.status == 200 and response.content_type == "text/html", path
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
        assert not re.search(r'(src|href)="(https?:)?//', page), path
        assert "<script" not in page, path
        api = "/api/overview" if path == "/" else f"/api{path}"
        assert f'href="{api}"' in page
        twin = await client.get(api)
        assert twin.status == 200 and twin.content_type == "application/json", api
    css = await client.get("/static/dashboard.css")
    assert css.status == 200 and "url(" not in await css.text()


# ---- a real browser --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _scrape_metrics(base: str, token: str) -> None:
    """The command mounts /metrics behind its token: each stream's last success, read from
    the run history (the dashboard runs no stream itself)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/metrics") as refused:
            assert refused.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/metrics", headers=headers) as answer:
            assert answer.status == 200
            text = await answer.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    last = families["pipeline_stream_last_success_timestamp_seconds"]
    assert QUARANTINED in {sample.labels["stream"] for sample in last.samples}


async def test_a_real_browser_loads_every_page_without_an_error(
    state_db: tuple[str, DashboardState], dashboard_url: str, tmp_path: Path
) -> None:
    """`pipeline dashboard` as a user starts it (a login in pipeline_dashboard, a token),
    each page in headless Chromium: no console error, no failed request; screenshots kept
    in the test's folder."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium here; .ci/run installs Debian's chromium where apt-get works")
    config = write_config(
        tmp_path / "pipeline.toml",
        {f"sources.{name}": body for name, body in state_db[1].sources.items()},
    )
    port, token = _free_port(), "browser-test-token-0123456789-abcdefgh"  # 32 and more
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pipeline", "--config", str(config), "--log-format", "json"),
        *("dashboard", "--port", str(port)),
        env={**os.environ, "DATABASE_URL": dashboard_url, "PIPELINE_DASHBOARD_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert f"127.0.0.1:{port}" in ready.decode(), ready
        base = f"http://127.0.0.1:{port}"
        await _scrape_metrics(base, token)
        pages = {
            "overview": "/",
            "stream": f"/streams/{quote(QUARANTINED, safe='')}",
            "stream-failed": f"/streams/{quote(FAILED, safe='')}",
            "quarantine": f"/quarantine?stream={quote(QUARANTINED)}",
            "drift": "/drift",
            "jobs": "/jobs",
        }
        async with Browser(chromium) as browser:
            refused = await browser.load(f"{base}/")
            assert any("HTTP 401" in p for p in refused.problems)  # no token yet
            first = await browser.load(f"{base}/?token={token}")
            assert first.status == 200 and not first.problems, first.problems
            for name, path in pages.items():
                load = await browser.load(base + path)
                shot = save(load, tmp_path / f"{name}.png")
                assert load.status == 200, (name, load.status)
                assert not load.problems, f"{name} ({shot}): {load.problems}"
                assert all(r.startswith(base) or r.startswith("data:") for r in load.requests)
                assert load.screenshot.startswith(b"\x89PNG")
                if name == "overview":
                    assert 'data-state="failed"' in load.html and 'data-state="late"' in load.html
            missing = await browser.load(f"{base}/streams/nosuch.stream")
            assert any("HTTP 404" in p for p in missing.problems)  # what a failure looks like
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()[-2000:]
