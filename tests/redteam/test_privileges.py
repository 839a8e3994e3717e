"""Finding 10: missing privileges printed tracebacks. `status`, `sync` and `dashboard` as a
login without privileges, `db upgrade` as a read-only one: a SQLAlchemy traceback, exit 1. Now
one line naming the privilege and the role to grant, exit 2. (The dashboard's own page for it:
tests/redteam/test_dashboard.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import exits
from pipeline.sandbox import RunningSimulator
from tests.helpers import run_cli
from tests.redteam.cli import soho_config
from tests.roles import login_in


@pytest.fixture
def config(tmp_path: Path, on_test_database: str, soho: RunningSimulator) -> Path:
    return soho_config(tmp_path, soho)


@pytest.mark.parametrize(
    ("role", "command", "expected"),
    [
        (None, ["status"], "GRANT pipeline_dashboard TO"),
        ("pipeline_analyst", ["status"], "GRANT pipeline_dashboard TO"),
        (None, ["sync"], "the role that ran `pipeline db upgrade`"),
        ("pipeline_analyst", ["sync"], "the role that ran `pipeline db upgrade`"),
        ("pipeline_dashboard", ["sync"], "INSERT on table pipeline.sync_runs"),
        ("pipeline_dashboard", ["backfill", "customers", "--since", "2024-01-01"], "INSERT on"),
        ("pipeline_dashboard", ["reset", "customers", "--yes"], "INSERT on"),
    ],
)
async def test_a_login_without_the_rights_gets_one_line_and_exit_2(
    database_url: str,
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    role: str | None,
    command: list[str],
    expected: str,
) -> None:
    async with login_in(database_url, role) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        code = await run_cli("--config", str(config), *command)
    err = capsys.readouterr().err
    assert code == exits.USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert "pipeline_test_login_" in lines[0]  # names the login


@pytest.mark.parametrize("role", ["pipeline_dashboard", "pipeline_analyst", None])
async def test_db_upgrade_as_a_reader_is_one_line_and_exit_2(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    role: str | None,
) -> None:
    """The database one revision behind, so the upgrade has something to do."""
    from pipeline import db

    engine = db.create_engine(database_url, pool_size=1)
    try:
        await db.upgrade(engine, "0007")  # no-op on a migrated clone: downgrade first
        from alembic import command

        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(db._alembic_config(c), "0007"))
    finally:
        await engine.dispose()
    async with login_in(database_url, role) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        code = await run_cli("db", "upgrade")
    err = capsys.readouterr().err
    assert code == exits.USAGE, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "db upgrade" in lines[0] and "owner" in lines[0], err
