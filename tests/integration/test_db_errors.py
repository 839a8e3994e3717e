"""A database that refuses us (no such database or role, a wrong password, no connection slot)
is one line on stderr naming the setting and the fix, exit code 2, from every command."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pipeline import db
from pipeline.cli import main
from pipeline.sandbox import RunningSimulator

PASSWORD = "Sh0uld-never-show"  # in every URL below; no output may contain it

COMMANDS = {
    "status": ["status"],
    "status --json": ["status", "--json"],
    "sync": ["sync"],
    "backfill": ["backfill", "customers", "--since", "2024-01-01"],
    "reconcile": ["reconcile", "customers"],
    "reset": ["reset", "customers", "--yes"],
    "db upgrade": ["db", "upgrade"],
    "schedule": ["schedule"],
    "demo": ["demo", "--customers", "5"],
}

MakeRole = Callable[[str], Awaitable[str]]


def _url(server_url: str, *, user: str | None = None, database: str | None = None) -> str:
    """`server_url` as another user (with PASSWORD) and/or database."""
    parts = urlsplit(server_url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    name = user or parts.username or "postgres"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, f"{name}:{PASSWORD}@{netloc}", path, parts.query, ""))


def _config(path: Path, soho: RunningSimulator, database_url: str | None = None) -> Path:
    database = f'[database]\nurl = "{database_url}"\n\n' if database_url else ""
    token = soho.sim.token  # type: ignore[attr-defined]
    soho_table = f'[sources.soho]\nbase_url = "{soho.url}/api/v1"\ntoken = "{token}"\n'
    path.write_text(database + soho_table, encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path, soho: RunningSimulator, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return _config(tmp_path / "pipeline.toml", soho)


@pytest.fixture
async def make_role(pg_server_url: str) -> AsyncIterator[MakeRole]:
    """Roles created on the test server for one test (`CREATE ROLE <name> <options>`), dropped
    after it."""
    admin = await asyncpg.connect(db.plain_url(pg_server_url))
    made: list[str] = []

    async def make(options: str) -> str:
        name = f"pipeline_test_role_{os.getpid()}_{len(made)}"
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.execute(f'CREATE ROLE "{name}" {options}')
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def _refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command; it must exit 2 with exactly one line on stderr, which is returned."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert PASSWORD not in out + err
    assert lines[0].startswith("pipeline: ")
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_database_that_does_not_exist(
    command: str,
    config: Path,
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"pipeline_test_missing_{os.getpid()}"
    monkeypatch.setenv("DATABASE_URL", _url(pg_server_url, database=name))
    line = await _refused(["--config", str(config), *COMMANDS[command]], capsys)
    assert line.startswith(f'pipeline: DATABASE_URL: database "{name}" does not exist'), line
    assert "createdb -h " in line and line.endswith("name an existing database in DATABASE_URL")


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_role_that_does_not_exist(
    command: str,
    config: Path,
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    role = f"pipeline_test_nobody_{os.getpid()}"
    monkeypatch.setenv("DATABASE_URL", _url(pg_server_url, user=role))
    line = await _refused(["--config", str(config), *COMMANDS[command]], capsys)
    assert line.startswith(f'pipeline: DATABASE_URL: the server refused role "{role}"'), line
    assert f'role "{role}" does not exist' in line  # the server's own words
    assert "createuser -h " in line and "correct the user in DATABASE_URL" in line


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_role_with_no_connection_left(
    command: str,
    config: Path,
    pg_server_url: str,
    make_role: MakeRole,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    role = await make_role("LOGIN CONNECTION LIMIT 0")  # the server answers 53300
    monkeypatch.setenv("DATABASE_URL", _url(pg_server_url, user=role))
    line = await _refused(["--config", str(config), *COMMANDS[command]], capsys)
    assert line.startswith("pipeline: DATABASE_URL: the server on "), line
    assert f'no connection left for role "{role}"' in line and "too many connections" in line
    assert "max_connections" in line and "CONNECTION LIMIT" in line


@pytest.fixture(scope="module")
def password_server() -> Iterator[tuple[Path, str]]:
    """A Postgres of our own that asks one role for its password (the shared test server trusts
    everyone, so it never rejects one): its socket folder and the role."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="pipeline-test-pw-"))
    os.chmod(folder, 0o755)
    server = pgserver.get_server(folder / "data", cleanup_mode="delete")
    role = "pipeline_password_test"
    hba = folder / "data" / "pg_hba.conf"
    hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text(encoding="utf-8"))
    server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'; SELECT pg_reload_conf();")
    try:
        yield folder / "data", role
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("command", COMMANDS)
async def test_a_wrong_password(
    command: str,
    config: Path,
    password_server: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    socket_dir, role = password_server
    url = f"postgresql://{role}:{PASSWORD}@/postgres?host={socket_dir}"
    monkeypatch.setenv("DATABASE_URL", url)
    line = await _refused(["--config", str(config), *COMMANDS[command]], capsys)
    said = f'pipeline: DATABASE_URL: the server rejected the password of role "{role}" on '
    assert line.startswith(f"{said}{socket_dir}"), line
    assert "password authentication failed" in line
    assert line.endswith("correct the password in DATABASE_URL")


async def test_the_config_files_database_url_is_named_when_it_is_the_one_used(
    tmp_path: Path,
    soho: RunningSimulator,
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    name = f"pipeline_test_missing_{os.getpid()}"
    config = _config(tmp_path / "p.toml", soho, _url(pg_server_url, database=name))
    line = await _refused(["--config", str(config), "status"], capsys)
    assert line.startswith(f'pipeline: [database] url in {config}: database "{name}" does not')
    assert line.endswith(f"name an existing database in [database] url in {config}")


async def test_the_pipeline_process_prints_one_line_and_exits_2(
    config: Path, pg_server_url: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": _url(pg_server_url, database=f"pipeline_test_missing_{os.getpid()}"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        "--config",
        str(config),
        "sync",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "createdb" in lines[0], lines
    assert PASSWORD.encode() not in out + err


async def test_a_stream_that_finds_no_connection_left_says_what_to_do(
    tmp_path: Path,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    database_url: str,
    make_role: MakeRole,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One connection is allowed: the first stream gets it, the second is refused by the server
    (through SQLAlchemy's pool, wrapped in its DBAPIError) and fails with the fix."""
    admin = await asyncpg.connect(db.plain_url(database_url))
    superuser = await admin.fetchval("SELECT current_user")
    await admin.close()
    role = await make_role(f'LOGIN CONNECTION LIMIT 1 IN ROLE "{superuser}"')  # not a superuser
    monkeypatch.setenv("DATABASE_URL", _url(database_url, user=role))
    config = tmp_path / "two.toml"
    config.write_text(
        _config(tmp_path / "one.toml", soho).read_text(encoding="utf-8")
        + f'\n[sources.valomnia]\nbase_url = "{valomnia.url}"\n'
        f'username = "{valomnia.sim.username}"\npassword = "{valomnia.sim.password}"\n',  # type: ignore[attr-defined]
        encoding="utf-8",
    )
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["--config", str(config), "sync"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and PASSWORD not in out + err
    statuses = [row.split("│")[2].strip() for row in out.splitlines() if row.startswith("│")]
    assert sorted(statuses) == ["failed", "succeeded"], out
    failed = " ".join(out.split())  # the summary table may wrap the sentence
    assert "database error: the server has no connection left" in failed, out
    assert "max_connections" in failed and "max_streams" in failed, out
