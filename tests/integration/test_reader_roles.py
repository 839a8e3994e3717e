"""Revision 0007's reader roles, used through real logins: what each can read, and that
neither can write; the roles survive a second database and one database's downgrade."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.db import plain_url
from pipeline.tables import CHILD_TABLES, STREAM_TABLES
from tests.helpers import execute, rows
from tests.roles import login_in

DENIED = asyncpg.InsufficientPrivilegeError


async def _analytics_views(engine: AsyncEngine) -> list[str]:
    found = await rows(
        engine,
        "SELECT table_name FROM information_schema.views WHERE table_schema = 'analytics' "
        "ORDER BY 1",
    )
    return [f"analytics.{r.table_name}" for r in found]


async def test_an_analyst_login_reads_every_view_and_no_raw_table(
    engine: AsyncEngine, database_url: str
) -> None:
    views = await _analytics_views(engine)
    assert len(views) == len(STREAM_TABLES) + len(CHILD_TABLES)
    await execute(
        engine,
        "INSERT INTO soho.customers (_source, id, data, _hash, _run_id) "
        "VALUES ('soho', 1, '{}', '\\x00', gen_random_uuid())",
    )
    async with login_in(database_url, "pipeline_analyst") as url:
        conn = await asyncpg.connect(plain_url(url))
        try:
            for view in views:
                await conn.fetchval(f"SELECT count(*) FROM {view}")
            assert await conn.fetchval("SELECT count(*) FROM analytics.soho_customers") == 1
            closed = [
                *(
                    f"{t.schema}.{t.name}"
                    for t in [*STREAM_TABLES.values(), *CHILD_TABLES.values()]
                ),
                "pipeline.quarantine",
                "pipeline.stream_state",
                "pipeline.sync_runs",
                "pipeline_queue.procrastinate_jobs",
            ]
            for table in closed:
                with pytest.raises(DENIED):
                    await conn.fetchval(f"SELECT 1 FROM {table} LIMIT 1")
        finally:
            await conn.close()


WRITES = [
    # a simple view is updatable: only the missing privilege stops these
    "INSERT INTO analytics.soho_customers (source, id, data) VALUES ('x', 2, '{}')",
    "UPDATE analytics.soho_customers SET email = 'x'",
    "DELETE FROM analytics.soho_customers",
    "CREATE TABLE analytics.mine (id int)",
    "CREATE VIEW analytics.mine AS SELECT 1 AS one",
    "CREATE TABLE public.mine (id int)",
    "CREATE SCHEMA mine",
    "INSERT INTO pipeline.sync_runs (run_id, stream, status) "
    "VALUES (gen_random_uuid(), 'x', 'running')",
    "UPDATE pipeline.stream_state SET watermark = now()",
    "DELETE FROM pipeline.quarantine",
    "DELETE FROM soho.customers",
    "TRUNCATE soho.customers",
    "DELETE FROM pipeline_queue.procrastinate_jobs",
]


@pytest.mark.parametrize("role", ["pipeline_analyst", "pipeline_dashboard"])
async def test_neither_reader_can_write_anything(database_url: str, role: str) -> None:
    async with login_in(database_url, role) as url:
        conn = await asyncpg.connect(plain_url(url))
        try:
            for statement in WRITES:
                with pytest.raises(DENIED):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_a_dashboard_login_reads_what_the_dashboard_shows(
    engine: AsyncEngine, database_url: str
) -> None:
    views = await _analytics_views(engine)
    async with login_in(database_url, "pipeline_dashboard") as url:
        conn = await asyncpg.connect(plain_url(url))
        try:
            # every declared stream table, so a revision adding one must grant it
            for table in STREAM_TABLES.values():
                await conn.fetchval(f"SELECT count(*) FROM {table.schema}.{table.name}")
            for table in [
                "pipeline.sync_runs",
                "pipeline.stream_state",
                "pipeline.quarantine",
                "pipeline_queue.procrastinate_jobs",
                "alembic_version",
                *views,
            ]:
                await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in CHILD_TABLES.values():  # not shown, not granted
                with pytest.raises(DENIED):
                    await conn.fetchval(f"SELECT 1 FROM {table.schema}.{table.name}")
        finally:
            await conn.close()


async def test_a_view_a_later_revision_creates_is_readable_by_analysts(
    engine: AsyncEngine, database_url: str
) -> None:
    """Default privileges: a view created later by the migrating role follows."""
    await execute(engine, "CREATE VIEW analytics.later AS SELECT id FROM soho.customers")
    async with login_in(database_url, "pipeline_analyst") as url:
        conn = await asyncpg.connect(plain_url(url))
        try:
            assert await conn.fetchval("SELECT count(*) FROM analytics.later") == 0
        finally:
            await conn.close()


async def test_roles_that_exist_are_reused_and_a_downgrade_leaves_other_databases_working(
    engine: AsyncEngine, database_url: str, pg_server_url: str, template_database: str
) -> None:
    """The template created the roles; this clone downgrades below 0007 and upgrades again
    with the roles present, while a second database on the server keeps its grants."""
    other_name = f"{template_database}_other"
    await db.recreate_database(pg_server_url, other_name, template=template_database)
    try:

        def down(sync_conn: sa.Connection) -> None:
            from alembic import command

            command.downgrade(db._alembic_config(sync_conn), "0006")

        async with engine.begin() as conn:
            await conn.run_sync(down)
        roles = await rows(
            engine,
            "SELECT rolname FROM pg_roles WHERE rolname IN ('pipeline_analyst', 'pipeline_dashboard')",
        )
        assert len(roles) == 2, "the roles stay: other databases use them"
        async with login_in(database_url, "pipeline_analyst") as url:
            here = await asyncpg.connect(plain_url(url))
            there = await asyncpg.connect(plain_url(db.with_database(url, other_name)))
            try:
                with pytest.raises(DENIED):
                    await here.fetchval("SELECT count(*) FROM analytics.soho_customers")
                assert await there.fetchval("SELECT count(*) FROM analytics.soho_customers") == 0
            finally:
                await here.close()
                await there.close()
        await db.upgrade(engine)
        async with login_in(database_url, "pipeline_analyst") as url:
            conn = await asyncpg.connect(plain_url(url))
            try:
                assert await conn.fetchval("SELECT count(*) FROM analytics.soho_customers") == 0
            finally:
                await conn.close()
    finally:
        await db.drop_database(pg_server_url, other_name)
