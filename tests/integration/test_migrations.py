"""Migrations: the migrated schema is exactly the declared metadata; upgrade is idempotent."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.tables import STREAM_TABLES, declared_here, metadata


async def test_migrated_schema_matches_the_declarations(engine: AsyncEngine) -> None:
    def differences(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(
            sync_conn,
            opts={"include_schemas": True, "include_name": declared_here, "compare_type": True},
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_upgrade_is_idempotent_and_at_head(engine: AsyncEngine) -> None:
    await db.upgrade(engine)
    await db.upgrade(engine)
    async with engine.connect() as conn:
        assert await db.current_revision(conn) == db.head_revision()


def test_every_stream_table_has_a_key_the_raw_record_and_bookkeeping() -> None:
    for key, table in STREAM_TABLES.items():
        # the instance the row was read from, then the record's own key
        assert next(c.name for c in table.primary_key.columns) == "_source", key
        assert len(table.primary_key.columns) == 2, key
        for column in (
            "data",
            "_hash",
            "_cursor",
            "_synced_at",
            "_run_id",
            "_deleted_at",
            "_absent_scans",
        ):
            assert column in table.columns, f"{key} lacks {column}"


async def test_every_revision_downgrades_and_upgrades_again(engine: AsyncEngine) -> None:
    from alembic import command

    def down_and_up(sync_conn: sa.Connection) -> None:
        config = db._alembic_config(sync_conn)
        command.downgrade(config, "base")
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        await conn.run_sync(down_and_up)
    async with engine.connect() as conn:
        assert await db.current_revision(conn) == db.head_revision()


async def test_every_table_has_an_analytics_view_without_deleted_rows_or_bookkeeping(
    engine: AsyncEngine,
) -> None:
    from pipeline.tables import CHILD_TABLES

    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(
                "SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) AS cols "
                "FROM information_schema.columns WHERE table_schema = 'analytics' GROUP BY 1"
            )
        )
        views = {row.table_name: row.cols for row in result}
    for table in [*STREAM_TABLES.values(), *CHILD_TABLES.values()]:
        name = f"{table.schema}_{table.name}"
        assert name in views, f"no analytics view for {table.schema}.{table.name}"
        # the instance a row came from as `source`, then its columns, no bookkeeping
        expected = ["source", *(c.name for c in table.columns if not c.name.startswith("_"))]
        assert views[name] == expected, name


async def test_analytics_views_hide_deleted_rows(engine: AsyncEngine) -> None:
    import uuid

    async with engine.begin() as conn:
        for id_, deleted in ((1, None), (2, sa.func.now())):
            await conn.execute(
                STREAM_TABLES["valomnia.authorities"]
                .insert()
                .values(
                    _source="valomnia",
                    id=id_,
                    name=f"a{id_}",
                    data={},
                    _hash=b"x",
                    _run_id=uuid.uuid4(),
                    _deleted_at=deleted,
                )
            )
    async with engine.connect() as conn:
        ids = (
            await conn.execute(sa.text("SELECT id FROM analytics.valomnia_authorities"))
        ).scalars()
        assert list(ids) == [1]


def test_the_job_queue_schema_is_the_installed_procrastinate_release() -> None:
    """Revision 0006 applies a copy of procrastinate's SQL: a new release of the library needs a
    revision with its migration scripts, and this says so before a worker meets old tables."""
    from importlib import resources
    from importlib.metadata import version

    installed = resources.files("procrastinate") / "sql" / "schema.sql"
    copy = db.MIGRATIONS_DIR / "sql" / f"procrastinate-{version('procrastinate')}.sql"
    assert copy.exists(), (
        f"procrastinate {version('procrastinate')}: add a revision and {copy.name}"
    )
    assert copy.read_text(encoding="utf-8") == installed.read_text(encoding="utf-8")
