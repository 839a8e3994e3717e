"""Alembic environment: runs on a connection handed in by `pipeline db upgrade`, or on its own
engine from DATABASE_URL when invoked as `alembic ...`."""

from __future__ import annotations

import asyncio
import os

import sqlalchemy as sa
from alembic import context

from pipeline.db import async_url
from pipeline.tables import declared_here, metadata

config = context.config
target_metadata = metadata


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=declared_here,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=os.environ.get("DATABASE_URL", "postgresql://localhost/pipeline"),
        target_metadata=target_metadata,
        literal_binds=True,
        include_schemas=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online_standalone() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "set DATABASE_URL, or use `pipeline db upgrade` which also knows the embedded server"
        )
    engine = create_async_engine(async_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(_configure)
    await engine.dispose()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _configure(connection)
else:
    asyncio.run(_run_online_standalone())
