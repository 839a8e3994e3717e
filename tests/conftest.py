"""Shared fixtures: a real Postgres (migrated template cloned per test) and the simulators.

Postgres: TEST_DATABASE_URL (or DATABASE_URL) names a server where the tests may create
databases; without one, an embedded server (pgserver) starts in a temporary folder. Migrations
run once into a template database; each test gets a fresh clone, dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.logs import configure_logging, secrets
from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from tests import source_limits

_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("json", "warning")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="pipeline-test-pg-"))
    os.chmod(folder, 0o755)
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
async def template_database(pg_server_url: str) -> AsyncIterator[str]:
    name = f"pipeline_test_tpl_{os.getpid()}"
    url = await db.recreate_database(pg_server_url, name)
    engine = db.create_engine(url, pool_size=1)
    await db.upgrade(engine)
    await engine.dispose()
    yield name
    await db.drop_database(pg_server_url, name)


@pytest.fixture
async def database_url(pg_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"pipeline_test_{os.getpid()}_{next(_counter)}"
    url = await db.recreate_database(pg_server_url, name, template=template_database)
    yield url
    await db.drop_database(pg_server_url, name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    yield engine
    checked_out = engine.pool.checkedout()  # type: ignore[attr-defined]
    await engine.dispose()
    assert checked_out == 0, f"{checked_out} pooled connection(s) left checked out"


@pytest.fixture
async def soho() -> AsyncIterator[RunningSimulator]:
    async with serve(SohoSimulator(customers=120, seed=11)) as running:
        yield running


@pytest.fixture
async def valomnia() -> AsyncIterator[RunningSimulator]:
    async with serve(ValomniaSimulator(authorities=230, seed=12)) as running:
        yield running


@pytest.fixture(autouse=True)
def _source_limits_held(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when a simulator saw more than its source's configured concurrency cap
    or request rate (`tests.source_limits`); checked after the simulators have stopped."""
    watch = source_limits.watch()
    yield
    source_limits.stop_watching()
    marker = request.node.get_closest_marker("unchecked_limits")
    if marker is not None:
        assert marker.args and marker.args[0], "unchecked_limits needs its reason"
        return
    if violations := watch.violations():
        pytest.fail("source limits not held: " + "; ".join(violations), pytrace=False)


@pytest.fixture(autouse=True)
def _clear_secrets() -> Iterator[None]:
    yield
    secrets.clear()


@pytest.fixture
def log_text(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Everything logged so far, at debug level, as JSON lines (logs go to whatever sys.stderr
    is when they are written, so pytest's capture sees them)."""
    configure_logging("json", "debug")
    yield lambda: capsys.readouterr().err
    configure_logging("json", "warning")
