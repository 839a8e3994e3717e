"""The database: which Postgres, the engine, and migrations.

`DATABASE_URL` (or `[database].url`) names a server; without one, an embedded PostgreSQL (the
`pgserver` package) is started in a local folder, so a new user needs nothing installed.
Engines are created here and handed to whoever needs them; no module holds a global engine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from pipeline import dberrors
from pipeline.logs import get_logger

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Serialises `db upgrade` across processes (a compose one-shot and a scheduler starting together).
MIGRATION_LOCK_KEY = 0x70697065  # "pipe"


def async_url(url: str) -> str:
    """postgresql://... -> postgresql+asyncpg://... (users write the plain form)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+asyncpg"
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def plain_url(url: str) -> str:
    """The form asyncpg and psql accept."""
    parts = urlsplit(url)
    scheme = "postgresql" if parts.scheme.startswith("postgres") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server in `data_dir`; return its connection URL.

    The server is stopped when the last process using it exits.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR
        import pgserver

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if os.name == "posix" and os.geteuid() == 0:
        # pgserver runs Postgres as an unprivileged user when we are root: it must be able
        # to reach its folder.
        for parent in [data_dir.parent, *data_dir.parent.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                log.warning("granting_traverse_permission", folder=str(parent))
                parent.chmod(mode | 0o001)
    log.info("embedded_postgres_starting", data_dir=str(data_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
    return server.get_uri()


def with_database(url: str, name: str) -> str:
    """The same server, another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def recreate_database(url: str, name: str, *, template: str | None = None) -> str:
    """Drop and create database `name` on the server of `url`; return its URL.

    Used by the demo (so it never touches the user's own tables) and by the tests (a migrated
    template cloned per test)."""
    import asyncpg

    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return with_database(url, name)


async def drop_database(url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_engine(
    url: str, *, pool_size: int = 10, read_only: bool = False, application_name: str = "pipeline"
) -> AsyncEngine:
    """`read_only`: every transaction of its sessions is READ ONLY (`default_transaction_read_only`),
    autocommitted statements included, so a reader cannot write even under a role that may."""
    server_settings = {"application_name": application_name}
    if read_only:
        server_settings["default_transaction_read_only"] = "on"
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings},
    )


def _alembic_config(connection: Any | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to `revision`; idempotent, and safe to run from two places at once."""
    from alembic import command

    def run(sync_conn: sa.Connection) -> None:
        command.upgrade(_alembic_config(sync_conn), revision)

    async with engine.begin() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        await conn.run_sync(run)


async def current_revision(conn: AsyncConnection) -> str | None:
    def read(sync_conn: sa.Connection) -> str | None:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(read)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def wait_until_reachable(engine: AsyncEngine, seconds: float = 10.0) -> None:
    """Connect once, so a person gets a sentence instead of a driver traceback (the CLI builds
    it from `ConnectFailed.error`). A server not up yet is waited for; an answer that waiting
    cannot change (no such database or role, wrong password, no slot left) fails at once."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                return
        except dberrors.DATABASE_ERRORS as exc:
            if not dberrors.may_pass(exc) or asyncio.get_running_loop().time() > deadline:
                raise dberrors.ConnectFailed(dberrors.driver_error(exc)) from None
            await asyncio.sleep(0.5)
