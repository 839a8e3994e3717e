"""pipeline.toml validation: the example file, one clear line per mistake, and the CLI's exit 2.

No database here: a bad configuration must stop the command before any connection is made,
so the CLI tests forbid the database functions outright instead of merely not needing them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pipeline import cli, db
from pipeline.config import (
    DEFAULT_EMBEDDED_DIR,
    ConfigError,
    Settings,
    StreamSettings,
    load_settings,
    resolve_config_path,
)
from pipeline.logs import configure_logging
from pipeline.settings import ExecutionSettings
from pipeline.sources import SOURCES

EXAMPLE = Path(__file__).resolve().parents[2] / "pipeline.example.toml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SOHO = """
[sources.soho]
base_url = "https://soho.example.com/api/v1"
token = "soho-secret-token"
"""

VALOMNIA = """
[sources.valomnia]
base_url = "https://acme.valomnia.com"
username = "etl"
password = "valomnia-secret-password"
"""


def _write(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    return load_settings(path, environ or {}, SOURCES)


def _error(path: Path, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(path, environ)
    return str(caught.value)


def _env_refs(value: Any) -> set[str]:
    """The ${VAR} names used in the values of a parsed file (comments do not count)."""
    if isinstance(value, dict):
        return {name for v in value.values() for name in _env_refs(v)}
    if isinstance(value, list):
        return {name for v in value for name in _env_refs(v)}
    if isinstance(value, str):
        return set(_ENV_REF.findall(value))
    return set()


def _fake_env(names: set[str]) -> dict[str, str]:
    return {name: f"value-of-{name.lower()}" for name in names}


# ---- the example file ------------------------------------------------------------------------


# The variables the example needs: its ${VAR} references (those in comments are optional).
EXAMPLE_VARIABLES = _env_refs(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))


def test_example_loads_when_its_variables_are_set() -> None:
    environ = _fake_env(EXAMPLE_VARIABLES)

    settings = _load(EXAMPLE, environ)

    assert set(settings.sources) == set(SOURCES)  # a block for every source in the registry
    # No secret is written in the example: each one comes from a variable, named after its
    # source ([sources.soho] reads SOHO_TOKEN).
    assert settings.secret_values() and set(settings.secret_values()) <= set(environ.values())
    blocks = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))["sources"]
    for name, block in blocks.items():
        assert all(v.startswith(f"{name.upper()}_") for v in _env_refs(block)), name
    soho = settings.sources["soho"]
    assert soho.settings.token.get_secret_value() == "value-of-soho_token"  # type: ignore[attr-defined]
    assert soho.streams["customers"].page_size == 25
    assert soho.streams["customers"].schedule == "0 2 * * *"
    valomnia = settings.sources["valomnia"].settings
    assert valomnia.username == "value-of-valomnia_user"  # type: ignore[attr-defined]
    assert valomnia.api_version == "v2.1"  # type: ignore[attr-defined]
    assert settings.database_url is None
    assert settings.embedded_dir == Path(DEFAULT_EMBEDDED_DIR)


@pytest.mark.parametrize("missing", sorted(EXAMPLE_VARIABLES))
def test_example_names_the_missing_variable(missing: str) -> None:
    environ = _fake_env(EXAMPLE_VARIABLES - {missing})

    message = _error(EXAMPLE, environ)

    assert "\n" not in message
    assert message.startswith(f"{EXAMPLE}: ")
    assert f"environment variable {missing} is not set" in message
    assert f"export {missing}=" in message


def test_every_commented_key_in_the_example_is_real(tmp_path: Path) -> None:
    """Uncomment every optional key (the token login instead of username/password, the
    identity + key exchange instead of the Sparkfly token): still valid.

    Guards against the example drifting from the models: a renamed or removed key fails here.
    """
    lines = []
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.match(r"(username|password) = |token = \"\$\{SPARKFLY_TOKEN\}\"", line):
            continue
        lines.append(re.sub(r"^# (?=[a-z_]+ = )", "", line))
    variant = _write(tmp_path, "\n".join(lines))
    names = _env_refs(tomllib.loads(variant.read_text(encoding="utf-8")))
    assert {"VALOMNIA_TOKEN", "PGPASSWORD"} <= names

    settings = _load(variant, _fake_env(names))

    valomnia = settings.sources["valomnia"].settings
    assert valomnia.token.get_secret_value() == "value-of-valomnia_token"  # type: ignore[attr-defined]
    assert valomnia.token_header == "Authorization"  # type: ignore[attr-defined]
    assert settings.sources["soho"].settings.requests_per_second == 5
    assert settings.database_url == (
        "postgresql://pipeline:value-of-pgpassword@localhost:5432/warehouse"
    )


def test_example_documents_every_key_of_the_models() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^(?:# )?([a-z_]+) = ", text, flags=re.MULTILINE))
    expected = {"url", "embedded_dir", *StreamSettings.model_fields}
    expected |= set(ExecutionSettings.model_fields)
    for spec in SOURCES.values():
        expected |= set(spec.settings_model.model_fields) - {"streams"}
        for stream in spec.streams:
            expected |= set(stream.settings_model.model_fields)

    assert expected - documented == set(), "keys missing from pipeline.example.toml"
    assert documented - expected == set(), "keys in pipeline.example.toml that do not exist"


# ---- one line per mistake --------------------------------------------------------------------

# (id, file text, environment, dotted key or None, hints that must appear in the message)
BAD_CONFIGS: list[tuple[str, str, dict[str, str], str | None, tuple[str, ...]]] = [
    (
        "unknown top-level key",
        SOHO + '\n[databse]\nurl = "postgresql://db/x"\n',
        {},
        "databse",
        ("unknown key", "allowed here: database, execution, sources"),
    ),
    (
        "unknown execution backend",
        SOHO + '\n[execution]\nbackend = "celery"\n',
        {},
        "execution.backend",
        ("'local' or 'queue'",),
    ),
    (
        "a stall shorter than two heartbeats",
        SOHO + "\n[execution]\nheartbeat_seconds = 10\nstalled_after_seconds = 15\n",
        {},
        "execution",
        ("at least twice heartbeat_seconds",),
    ),
    (
        "unknown source",
        '[sources.shopify]\nbase_url = "https://shop.example.com"\n',
        {},
        "sources.shopify",
        ("unknown source", "known sources: afosto, digilocker, soho, sparkfly, valomnia"),
    ),
    (
        "unknown stream",
        SOHO + "\n[sources.soho.streams.orders]\nenabled = true\n",
        {},
        "sources.soho.streams.orders",
        ("unknown stream", "soho has: customers"),
    ),
    (
        "typo in a source key",
        SOHO + "max_concurency = 4\n",
        {},
        "sources.soho.max_concurency",
        ("unknown key", "check its spelling"),
    ),
    (
        "unknown key in a stream",
        SOHO + "\n[sources.soho.streams.customers]\npagesize = 10\n",
        {},
        "sources.soho.streams.customers.pagesize",
        ("unknown key", "check its spelling"),
    ),
    (
        "wrong type",
        SOHO + 'max_concurrency = "four"\n',
        {},
        "sources.soho.max_concurrency",
        ("expected a whole number", "got a string"),
    ),
    (
        "a value from the environment is never echoed",
        SOHO + 'max_concurrency = "${SOHO_SECRET_NUMBER}"\n',
        {"SOHO_SECRET_NUMBER": "hunter2-secret"},
        "sources.soho.max_concurrency",
        ("expected a whole number", "got a string"),
    ),
    (
        "out of range",
        SOHO + "max_concurrency = 0\n",
        {},
        "sources.soho.max_concurrency",
        ("too small", "greater than or equal to 1"),
    ),
    (
        "missing environment variable",
        SOHO.replace('"soho-secret-token"', '"${SOHO_TOKEN}"'),
        {},
        "sources.soho.token",
        ("SOHO_TOKEN is not set", "export SOHO_TOKEN="),
    ),
    (
        "empty environment variable",
        SOHO.replace('"soho-secret-token"', '"${SOHO_TOKEN}"'),
        {"SOHO_TOKEN": ""},
        "sources.soho.token",
        ("SOHO_TOKEN is empty", "export SOHO_TOKEN="),
    ),
    (
        "missing required key",
        '[sources.soho]\nbase_url = "https://soho.example.com/api/v1"\n',
        {},
        "sources.soho.token",
        ("required key is missing", "add it"),
    ),
    (
        "ftp url",
        SOHO.replace("https://soho.example.com/api/v1", "ftp://x"),
        {},
        "sources.soho.base_url",
        ("http:// or https:// URL",),
    ),
    (
        "not a url",
        SOHO.replace("https://soho.example.com/api/v1", "not a url"),
        {},
        "sources.soho.base_url",
        ("http:// or https:// URL with a host",),
    ),
    (
        "url with credentials",
        SOHO.replace("https://", "https://etl:hunter22@"),
        {},
        "sources.soho.base_url",
        ("must not contain credentials", "source's own keys"),
    ),
    (
        "url with a bad port",
        SOHO.replace("soho.example.com", "soho.example.com:99999"),
        {},
        "sources.soho.base_url",
        ("invalid port", "1 to 65535"),
    ),
    (
        "page size above the api maximum",
        SOHO + "\n[sources.soho.streams.customers]\npage_size = 26\n",
        {},
        "sources.soho.streams.customers.page_size",
        ("above the API's maximum of 25", "use at most 25"),
    ),
    (
        "bad cron schedule",
        SOHO + '\n[sources.soho.streams.customers]\nschedule = "every night"\n',
        {},
        "sources.soho.streams.customers.schedule",
        ("not a cron expression like", "5 cron fields"),
    ),
    (
        "cron field out of range",
        SOHO + '\n[sources.soho.streams.customers]\nschedule = "0 25 * * *"\n',
        {},
        "sources.soho.streams.customers.schedule",
        ("not a cron expression like", "25"),
    ),
    (
        "valomnia token and username",
        VALOMNIA + 'token = "valomnia-token"\n',
        {},
        "sources.valomnia",
        ("either token or username + password, not both",),
    ),
    (
        "valomnia neither token nor username",
        '[sources.valomnia]\nbase_url = "https://acme.valomnia.com"\n',
        {},
        "sources.valomnia",
        ("set username and password", "or token"),
    ),
    (
        "valomnia username without password",
        '[sources.valomnia]\nbase_url = "https://acme.valomnia.com"\nusername = "etl"\n',
        {},
        "sources.valomnia",
        ("set username and password",),
    ),
    (
        "source is not a table",
        'sources = "soho"\n',
        {},
        "sources",
        ("expected a table like [sources]",),
    ),
    (
        "database url with another scheme",
        SOHO + '\n[database]\nurl = "mysql://etl@db/warehouse"\n',
        {},
        "database.url",
        ("expected postgresql://", "got a mysql URL"),
    ),
    (
        "database url not a string",
        SOHO + "\n[database]\nurl = 5432\n",
        {},
        "database.url",
        ("expected a quoted string", "postgresql://"),
    ),
    (
        "DATABASE_URL with another scheme",
        SOHO + '\n[database]\nurl = "postgresql://etl@db/warehouse"\n',
        {"DATABASE_URL": "mysql://etl:pw@db/warehouse"},
        "DATABASE_URL (environment, overrides database.url)",
        ("expected postgresql://", "got a mysql URL"),
    ),
    (
        "DATABASE_URL with a port that is not a number",
        SOHO,
        {"DATABASE_URL": "postgresql://etl:pw@db:54x2/warehouse"},
        "DATABASE_URL (environment, overrides database.url)",
        ("the port is not a number", "postgresql://user@host:5432/db"),
    ),
    (
        "not toml",
        "[sources.soho\nbase_url = https://soho.example.com\n",
        {},
        None,
        ("not valid TOML", "line 1", "fix the syntax"),
    ),
]


@pytest.mark.parametrize(
    ("text", "environ", "key", "hints"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_CONFIGS],
)
def test_bad_config_is_one_line_naming_file_key_and_fix(
    tmp_path: Path, text: str, environ: dict[str, str], key: str | None, hints: tuple[str, ...]
) -> None:
    path = _write(tmp_path, text)

    message = _error(path, environ)

    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert "pipeline.toml" in message
    if key is not None:
        assert message.startswith(f"{path}: {key}: "), message
    for hint in hints:
        assert hint in message, f"{hint!r} not in {message!r}"
    for value in environ.values():
        if value:
            assert value not in message, "a value from the environment was echoed"


def test_bad_config_never_echoes_the_database_password(tmp_path: Path) -> None:
    path = _write(tmp_path, SOHO)

    message = _error(path, {"DATABASE_URL": "mysql://etl:s3cret-pw@db/warehouse"})

    assert "s3cret-pw" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    message = _error(path)

    assert "\n" not in message
    assert message.startswith(f"{path}: file not found")
    assert "--config" in message and "PIPELINE_CONFIG" in message


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    message = _error(tmp_path)

    assert "\n" not in message
    assert message.startswith(f"{tmp_path}: cannot read the file")
    assert "--config" in message


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_bytes(b"\xff\xfe[sources]\n")

    message = _error(path)

    assert message == f"{path}: not UTF-8 text; save the file as UTF-8"


# ---- what valid files mean -------------------------------------------------------------------


def test_database_url_from_environment_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, SOHO + '\n[database]\nurl = "postgresql://file@db/warehouse"\n')

    settings = _load(path, {"DATABASE_URL": "postgresql://env@db/warehouse"})

    assert settings.database_url == "postgresql://env@db/warehouse"


def test_the_backend_from_the_environment_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, SOHO + '\n[execution]\nbackend = "local"\nheartbeat_seconds = 2\n')

    assert _load(path).execution.backend == "local"
    settings = _load(path, {"PIPELINE_BACKEND": "queue"})

    assert settings.execution.backend == "queue"
    assert settings.execution.heartbeat_seconds == 2  # the rest of the table still applies
    message = _error(path, {"PIPELINE_BACKEND": "celery"})
    assert message.startswith(f"{path}: PIPELINE_BACKEND"), message
    assert "local or queue" in message


def test_no_database_means_embedded(tmp_path: Path) -> None:
    settings = _load(_write(tmp_path, SOHO))

    assert settings.database_url is None
    assert settings.embedded_dir == Path(".pipeline/pgdata")


def test_unconfigured_streams_get_defaults(tmp_path: Path) -> None:
    settings = _load(_write(tmp_path, SOHO))

    customers = settings.sources["soho"].streams["customers"]
    assert customers == StreamSettings()
    assert customers.enabled is True


def test_config_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(None, {}) is None
    assert resolve_config_path(None, {"PIPELINE_CONFIG": "/etc/p.toml"}) == Path("/etc/p.toml")
    assert resolve_config_path("a.toml", {"PIPELINE_CONFIG": "/etc/p.toml"}) == Path("a.toml")
    _write(tmp_path, SOHO)
    assert resolve_config_path(None, {}) == Path("pipeline.toml")


# ---- secrets ---------------------------------------------------------------------------------


def test_secret_values_hold_every_credential(tmp_path: Path) -> None:
    path = _write(tmp_path, SOHO + VALOMNIA)

    settings = _load(path, {"DATABASE_URL": "postgresql://etl:db-secret-pw@db:5432/warehouse"})

    secrets = settings.secret_values()
    assert "soho-secret-token" in secrets
    assert "valomnia-secret-password" in secrets
    assert "db-secret-pw" in secrets
    assert "etl" not in secrets  # a username is not a secret


def test_secret_values_hold_a_valomnia_token(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[sources.valomnia]\nbase_url = "https://acme.valomnia.com"\ntoken = "${VALOMNIA_TOKEN}"\n',
    )

    settings = _load(path, {"VALOMNIA_TOKEN": "valomnia-header-token"})

    assert settings.secret_values() == ["valomnia-header-token"]


# ---- through the CLI: exit 2 before any database work ----------------------------------------


def _no_database(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise AssertionError("the CLI touched the database before rejecting the configuration")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DATABASE_URL, no PIPELINE_CONFIG, and any attempt to reach a database fails the test.

    `main` configures logging to the stderr of the moment (capsys's); the session set-up from
    conftest is put back afterwards so later tests do not log into a closed capture.
    """
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.setattr(db, "start_embedded", _no_database)
    monkeypatch.setattr(db, "create_engine", _no_database)
    yield
    configure_logging("json", "warning")


def _one_stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pipeline: "), err
    return lines[0]


@pytest.mark.usefixtures("cli_env")
def test_cli_bad_config_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, SOHO + "max_concurency = 4\n")

    code = cli.main(["--config", str(path), "sync"])

    assert code == cli.EXIT_USAGE == 2
    line = _one_stderr_line(capsys)
    assert (
        line
        == f"pipeline: {path}: sources.soho.max_concurency: unknown key; remove it or check its spelling"
    )


@pytest.mark.usefixtures("cli_env")
def test_cli_missing_variable_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing variable is reported by name, before anything else happens."""
    path = _write(tmp_path, SOHO.replace('"soho-secret-token"', '"${SOHO_TOKEN}"'))

    code = cli.main(["--config", str(path), "sync"])

    assert code == 2
    line = _one_stderr_line(capsys)
    assert "sources.soho.token" in line and "SOHO_TOKEN is not set" in line


@pytest.mark.usefixtures("cli_env")
def test_cli_without_config_file_exits_2_with_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    code = cli.main(["sync"])

    assert code == 2
    line = _one_stderr_line(capsys)
    assert "--config" in line and "PIPELINE_CONFIG" in line
    assert "pipeline.example.toml" in line


@pytest.mark.usefixtures("cli_env")
def test_cli_config_file_missing_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIPELINE_CONFIG", str(tmp_path / "gone.toml"))

    code = cli.main(["sync"])

    assert code == 2
    line = _one_stderr_line(capsys)
    assert "gone.toml: file not found" in line


@pytest.mark.usefixtures("cli_env")
def test_cli_unknown_stream_exits_2_naming_configured_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, SOHO + VALOMNIA)

    code = cli.main(["--config", str(path), "sync", "nosuchstream"])

    assert code == 2
    line = _one_stderr_line(capsys)
    assert "nosuchstream" in line
    assert "soho.customers" in line and "valomnia.authorities" in line
