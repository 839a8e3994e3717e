"""Red team: values that pass a careless validation and then crash, hang or double a load.

TOML allows `inf`, `nan`, integers of any size and floats down to 5e-324; an environment
variable can put anything at all into a `base_url`. Each value here used to be accepted and
then fail at run time (an OverflowError building the client, a rate limit that waits 1e300 s,
a lookback that overflows datetime arithmetic, a base URL that leaves its API root), or pass
silently (two instances of one account, every row stored twice). Each must be refused when
the file is read, in one line naming the file, the key, what is wrong and what is allowed;
and so through the real `pipeline` command: exit 2, one line, no traceback.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline import cli, db
from pipeline.config import ConfigError, Settings, load_settings, settings_from_mapping
from pipeline.extract.limits import RateLimiter
from pipeline.logs import configure_logging
from pipeline.settings import ExecutionSettings
from pipeline.sources import SOURCES
from pipeline.targets import build_client, select_streams

EXAMPLE = Path(__file__).resolve().parents[2] / "pipeline.example.toml"

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
SPARKFLY = """
[sources.sparkfly]
token = "sparkfly-secret-token"
"""
DIGILOCKER = """
[sources.digilocker]
client_id = "partner-7"
client_secret = "digilocker-secret"
"""
SECRETS = ("soho-secret-token", "valomnia-secret-password", "sparkfly-secret-token")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(path: Path, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {}, SOURCES)
    return str(caught.value)


# ---- 1. numbers that pass validation and crash or hang at run time ---------------------------

# (id, file text, dotted key, the allowed range the message must state). Every value here was
# accepted before (or refused without saying what is allowed), and then: `inf` MB crashed
# build_client (OverflowError), 1e-12 MB refused every body (0 bytes allowed), 1e-300 requests
# a second spaced requests 1e300 s apart, a 1e-9 s timeout failed every request, 10^15 s of
# lookback overflowed `watermark - timedelta(...)`, a filter id beyond 64 bits overflowed the
# query binding it, an infinite heartbeat never beat.
ABSURD: list[tuple[str, str, str, str]] = [
    ("rate inf", SOHO + "requests_per_second = inf\n", "requests_per_second", "0.001 to 10,000"),
    ("rate nan", SOHO + "requests_per_second = nan\n", "requests_per_second", "0.001 to 10,000"),
    (
        "rate vanishing",
        SOHO + "requests_per_second = 1e-300\n",
        "requests_per_second",
        "0.001 to 10,000",
    ),
    ("rate huge", SOHO + "requests_per_second = 1e12\n", "requests_per_second", "0.001 to 10,000"),
    ("timeout vanishing", SOHO + "timeout_seconds = 1e-9\n", "timeout_seconds", "0.1 to 3,600"),
    ("timeout inf", SOHO + "timeout_seconds = inf\n", "timeout_seconds", "0.1 to 3,600"),
    ("timeout a year", SOHO + "timeout_seconds = 31536000\n", "timeout_seconds", "0.1 to 3,600"),
    ("backoff huge", SOHO + "backoff_seconds = 1e300\n", "backoff_seconds", "0 to 300"),
    ("backoff inf", SOHO + "backoff_seconds = inf\n", "backoff_seconds", "0 to 300"),
    ("backoff nan", SOHO + "backoff_seconds = nan\n", "backoff_seconds", "0 to 300"),
    ("body cap vanishing", SOHO + "max_response_mb = 1e-12\n", "max_response_mb", "0.01 to 4,096"),
    ("body cap inf", SOHO + "max_response_mb = inf\n", "max_response_mb", "0.01 to 4,096"),
    ("body cap huge", SOHO + "max_response_mb = 1e300\n", "max_response_mb", "0.01 to 4,096"),
    ("retries beyond 64 bits", SOHO + f"max_retries = {2**64}\n", "max_retries", "0 to 20"),
    (
        "concurrency beyond 64 bits",
        SOHO + f"max_concurrency = {10**30}\n",
        "max_concurrency",
        "1 to 64",
    ),
    (
        "retry-after cap inf",
        SOHO + "max_retry_after_seconds = inf\n",
        "max_retry_after_seconds",
        "0 to 86,400",
    ),
    (
        "retry-after cap negative",
        SOHO + "max_retry_after_seconds = -1\n",
        "max_retry_after_seconds",
        "0 to 86,400",
    ),
    (
        "page size 10^12",
        VALOMNIA + "[sources.valomnia.streams.authorities]\npage_size = 1000000000000\n",
        "streams.authorities.page_size",
        "1 to 100,000",
    ),
    (
        "page size beyond 64 bits",
        VALOMNIA + f"[sources.valomnia.streams.authorities]\npage_size = {2**70}\n",
        "streams.authorities.page_size",
        "1 to 100,000",
    ),
    (
        "lookback 10^15 s",
        VALOMNIA + "[sources.valomnia.streams.authorities]\nlookback_seconds = 1000000000000000\n",
        "streams.authorities.lookback_seconds",
        "0 to 315,360,000",
    ),
    (
        "lookback beyond 64 bits",
        VALOMNIA + f"[sources.valomnia.streams.authorities]\nlookback_seconds = {2**70}\n",
        "streams.authorities.lookback_seconds",
        "0 to 315,360,000",
    ),
    (
        "sparkfly filter id beyond 64 bits",
        SPARKFLY + f"[sources.sparkfly.streams.credentials]\nmember_id = {2**64}\n",
        "streams.credentials.member_id",
        "1 to 9,223,372,036,854,775,807",
    ),
    (
        "digilocker ts offset beyond 64 bits",
        DIGILOCKER + f"ts_offset_seconds = {2**64}\n",
        "ts_offset_seconds",
        "-86,400 to 86,400",
    ),
    (
        "heartbeat inf",
        SOHO + "[execution]\nheartbeat_seconds = inf\nstalled_after_seconds = inf\n",
        "heartbeat_seconds",
        "0.1 to 3,600",
    ),
    (
        "heartbeat vanishing",
        SOHO + "[execution]\nheartbeat_seconds = 1e-300\n",
        "heartbeat_seconds",
        "0.1 to 3,600",
    ),
    (
        "stall huge",
        SOHO + "[execution]\nstalled_after_seconds = 1e300\n",
        "stalled_after_seconds",
        "1 to 86,400",
    ),
]


def _dotted(text: str, key: str) -> str:
    """The key's full dotted name: under the file's first table ([sources.x] or [execution])."""
    if key in ExecutionSettings.model_fields:
        return f"execution.{key}"
    first = re.search(r"^\[(sources\.[a-z_]+)\]", text, flags=re.MULTILINE)
    assert first is not None
    return f"{first.group(1)}.{key}"


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in ABSURD],
)
def test_an_absurd_number_is_refused_in_one_line_stating_the_allowed_range(
    tmp_path: Path, text: str, key: str, allowed: str
) -> None:
    path = _write(tmp_path, text)

    message = _refused(path)

    assert "\n" not in message, message
    assert message.startswith(f"{path}: {_dotted(text, key)}: "), message
    assert f"allowed: {allowed}" in message, message
    assert len(message) < 400, message  # a 400-digit integer is not echoed in full
    for secret in SECRETS:
        assert secret not in message


def _no_database(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise AssertionError("the CLI went on to the database with a configuration it should refuse")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DATABASE_URL or PIPELINE_CONFIG, and the database is out of reach: a value that
    passes validation shows as this AssertionError instead of as exit 2."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.setattr(db, "start_embedded", _no_database)
    monkeypatch.setattr(db, "create_engine", _no_database)
    yield
    configure_logging("json", "warning")


def _exit_2_with_one_line(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    try:
        code = cli.main(["--config", str(path), "sync"])
    except AssertionError as exc:  # reached the database: the value was accepted
        pytest.fail(f"accepted: {exc}")
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"pipeline: {path}: "), lines[0]
    return lines[0]


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [pytest.param(*case[1:], id=case[0]) for case in ABSURD],
)
def test_an_absurd_number_stops_the_pipeline_command_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str, allowed: str
) -> None:
    line = _exit_2_with_one_line(_write(tmp_path, text), capsys)

    assert f"{_dotted(text, key)}: " in line and f"allowed: {allowed}" in line


def test_the_example_states_every_bound() -> None:
    """Each bounded key is documented with the range its error message gives."""
    example = EXAMPLE.read_text(encoding="utf-8")
    for _case, _text, key, allowed in ABSURD:
        name = key.rsplit(".", 1)[-1]
        lines = re.findall(rf"^(?:# )?{name} = .*$", example, flags=re.MULTILINE)
        assert lines, f"{name} is not in pipeline.example.toml"
        assert any(allowed in line for line in lines), (
            f"pipeline.example.toml does not state {name}'s range as {allowed!r}: {lines}"
        )


# ---- the property: refused, or usable --------------------------------------------------------

_EXAMPLE_RAW = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _env_names(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {n for v in value.values() for n in _env_names(v)}
    if isinstance(value, str):
        return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value))
    return set()


# The example, a valid mapping with every source in it, is what each hostile value goes into.
_ENV = {name: f"value-of-{name.lower()}" for name in _env_names(_EXAMPLE_RAW)}


def _numeric(model: type[BaseModel]) -> list[str]:
    def is_number(annotation: Any) -> bool:
        options = get_args(annotation) or (annotation,)
        return any(o in (int, float) for o in options) and bool not in options

    return [name for name, f in model.model_fields.items() if is_number(f.annotation)]


def _numeric_settings() -> list[tuple[tuple[str, ...], str]]:
    """Every numeric key of every settings model, as (where in the mapping, key): each
    source's own model and every stream's, found from the declarations."""
    found: list[tuple[tuple[str, ...], str]] = [
        (("execution",), key) for key in _numeric(ExecutionSettings)
    ]
    for name, spec in SOURCES.items():
        found += [(("sources", name), key) for key in _numeric(spec.settings_model)]
        for stream in spec.streams:
            where = ("sources", name, "streams", stream.name)
            found += [(where, key) for key in _numeric(stream.settings_model)]
    return found


NUMERIC_SETTINGS = _numeric_settings()

HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            0.0,
            -0.0,
            math.inf,
            -math.inf,
            math.nan,
            5e-324,
            1e-300,
            1e-12,
            1e-9,
            1e300,
            1.7976931348623157e308,
            2**31,
            2**53 + 1,
            2**63 - 1,
            2**63,
            2**64,
            10**15,
            10**30,
            10**400,
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(min_value=-(10**6), max_value=10**6),
)

INT64 = 2**63


def _table(raw: dict[str, Any], where: tuple[str, ...]) -> dict[str, Any]:
    table = raw
    for step in where:
        table = table.setdefault(step, {})
    return table


def _copy(value: Any) -> Any:
    return {k: _copy(v) for k, v in value.items()} if isinstance(value, dict) else value


def _assert_usable(settings: Settings) -> None:
    """What a run computes from the settings, computed: none of it may raise, no wait may be
    endless (over a day) and nothing may vanish (a timeout no answer can beat, a body cap
    below 1 KB, a heartbeat that spins)."""
    now = datetime.now(UTC)
    execution = settings.execution
    for seconds in (execution.heartbeat_seconds, execution.stalled_after_seconds):
        assert 0.01 <= seconds <= 86_400
        now - timedelta(seconds=seconds)
    for config in settings.sources.values():
        client = build_client(SOURCES[config.type], config)
        rate = config.settings.requests_per_second
        if rate is not None:
            assert RateLimiter.MARGIN / rate <= 86_400  # the spacing between two starts
        assert 0.01 <= config.settings.timeout_seconds <= 86_400
        assert 1024 <= client.max_response_bytes < INT64
        for attempt in range(1, client.max_retries + 2):
            assert 0 <= client._backoff(attempt, None) <= 86_400
    for target in select_streams(settings, []):
        lookback = target.settings.lookback_seconds
        now - timedelta(seconds=lookback)
        datetime(2000, 1, 1, tzinfo=UTC) - timedelta(seconds=lookback)
        assert 1 <= target.stream.page_size(target.settings) < 2**31
        for _condition, value in target.filter_scope:
            assert -INT64 <= value < INT64  # bound as a bigint in the scan's scope
    for config in settings.sources.values():  # every number, known to this test or not
        for model in (config.settings, *config.streams.values()):
            for key in _numeric(type(model)):
                value = getattr(model, key)
                assert value is None or (math.isfinite(value) and -INT64 <= value < INT64), key


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setting=st.sampled_from(NUMERIC_SETTINGS), value=HOSTILE_NUMBERS)
def test_every_numeric_setting_is_refused_or_usable(
    setting: tuple[tuple[str, ...], str], value: int | float
) -> None:
    where, key = setting
    raw = _copy(_EXAMPLE_RAW)
    _table(raw, where)[key] = value

    try:
        validated = settings_from_mapping(raw, _ENV, SOURCES, label="(test)")
    except ConfigError as exc:  # on the key, or on its table (stalled < 2 heartbeats)
        message = str(exc)
        assert "\n" not in message and message.startswith(f"(test): {'.'.join(where)}"), message
        return
    _assert_usable(validated)


# ---- 2. base_url tricks ----------------------------------------------------------------------

# (id, base_url, a hint the message must give). All were accepted before: yarl resolved the
# dots (`/api/../admin` became `/admin`, `%2e%2e` too), stripped or encoded the control
# characters and spaces, and a backslash in the host raised ValueError at the first request.
BAD_URLS: list[tuple[str, str, str]] = [
    ("dot-dot segment", "https://soho.example.com/api/../admin", "'.' or '..' segment"),
    ("trailing dot-dot", "https://soho.example.com/api/v1/..", "'.' or '..' segment"),
    ("dot segment", "https://soho.example.com/./api/v1", "'.' or '..' segment"),
    ("encoded dot-dot", "https://soho.example.com/api/%2e%2e/admin", "percent-encoded dot"),
    ("encoded dot-dot upper", "https://soho.example.com/api/%2E%2E/admin", "percent-encoded dot"),
    ("half-encoded dot-dot", "https://soho.example.com/api/.%2E/admin", "percent-encoded dot"),
    ("space", "https://soho.example.com/api v1", "space or control character"),
    ("CR LF", "https://soho.example.com/api/v1\r\nX-Injected: 1", "space or control character"),
    ("LF alone", "https://soho.example.com/api/v1\n", "space or control character"),
    ("tab", "https://soho.example.com/api/\tv1", "space or control character"),
    ("NUL", "https://soho.example.com/api/v1\x00", "space or control character"),
    ("DEL", "https://soho.example.com/api/v1\x7f", "space or control character"),
    ("C1 control", "https://soho.example.com/api/v1\x85", "space or control character"),
    ("line separator", "https://soho.example.com/api/v1\u2028", "space or control character"),
    ("backslash in the host", "https://evil.example\\.soho.example.com/api", "backslash"),
    ("backslash in the path", "https://soho.example.com/api\\..\\admin", "backslash"),
]


@pytest.mark.parametrize(
    ("url", "hint"), [pytest.param(*case[1:], id=case[0]) for case in BAD_URLS]
)
def test_a_tricky_base_url_is_refused_in_one_line(tmp_path: Path, url: str, hint: str) -> None:
    """Through the environment, where any character can come from."""
    path = _write(tmp_path, SOHO.replace('"https://soho.example.com/api/v1"', '"${SOHO_URL}"'))

    message = _refused(path, {"SOHO_URL": url})

    assert "\n" not in message and "\r" not in message, repr(message)
    assert message.startswith(f"{path}: sources.soho.base_url: "), message
    assert hint in message, message


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    "url",
    [
        "https://soho.example.com/api/../admin",
        "https://soho.example.com/api/%2e%2e/admin",
        "https://soho.example.com/api\\..\\admin",
        "https://soho.example.com/api v1",
    ],
)
def test_a_tricky_base_url_stops_the_pipeline_command_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    text = SOHO.replace("https://soho.example.com/api/v1", url.replace("\\", "\\\\"))

    line = _exit_2_with_one_line(_write(tmp_path, text), capsys)

    assert "sources.soho.base_url: " in line


def test_a_valomnia_api_version_cannot_climb_out_of_the_api(tmp_path: Path) -> None:
    """The API root is `<base_url>/api/<api_version>`: a version is one path segment."""
    path = _write(tmp_path, VALOMNIA + 'api_version = "v2.1/../../admin"\n')

    message = _refused(path)

    assert message.startswith(f"{path}: sources.valomnia.api_version: "), message


def test_ordinary_base_urls_still_pass(tmp_path: Path) -> None:
    """Dots inside names, ports, encoded characters other than dots, IPv6 hosts."""
    for url in (
        "https://soho.example.com/api/v1",
        "https://soho.example.com:8443/api/v1.2/",
        "http://127.0.0.1:5001/api/v1",
        "http://[::1]:8080/api/v1",
        "https://soho.example.com/api/a%20b/..x/x..",
    ):
        path = _write(tmp_path, SOHO.replace("https://soho.example.com/api/v1", url))
        loaded = load_settings(path, {}, SOURCES)
        assert loaded.sources["soho"].settings.base_url == url.rstrip("/")


# ---- 2b. two instances of one account --------------------------------------------------------


def _instances(*bodies: tuple[str, str]) -> str:
    return "".join(f"\n[sources.{name}]\n{body}\n" for name, body in bodies)


# (id, file text, the second instance's name, the first's) — the same API root once
# normalised (case, default port, trailing slash, `type` defaulting to the name), the same
# credentials: every record would be loaded twice, under two `_source` values.
DOUBLED: list[tuple[str, str, str, str]] = [
    (
        "soho, same url and token",
        _instances(
            ("soho", 'base_url = "https://soho.example.com/api/v1"\ntoken = "soho-secret-token"'),
            (
                "soho_copy",
                'type = "soho"\nbase_url = "HTTPS://Soho.Example.com:443/api/v1/"\n'
                'token = "soho-secret-token"',
            ),
        ),
        "soho_copy",
        "soho",
    ),
    (
        "afosto, both on the default host",
        _instances(
            ("afosto_nl", 'type = "afosto"\ntoken = "jwt-secret"'),
            ("afosto_be", 'type = "afosto"\ntoken = "jwt-secret"'),
        ),
        "afosto_be",
        "afosto_nl",
    ),
    (
        "valomnia, same host and login",
        _instances(
            ("valomnia", VALOMNIA.split("]\n", 1)[1]),
            ("valomnia_2", 'type = "valomnia"\n' + VALOMNIA.split("]\n", 1)[1]),
        ),
        "valomnia_2",
        "valomnia",
    ),
    (
        "digilocker, same partner",
        _instances(
            ("digilocker", DIGILOCKER.split("]\n", 1)[1]),
            ("digilocker_b", 'type = "digilocker"\n' + DIGILOCKER.split("]\n", 1)[1]),
        ),
        "digilocker_b",
        "digilocker",
    ),
]


@pytest.mark.parametrize(
    ("text", "second", "first"), [pytest.param(*case[1:], id=case[0]) for case in DOUBLED]
)
def test_two_instances_of_one_account_are_refused_naming_both(
    tmp_path: Path, text: str, second: str, first: str
) -> None:
    path = _write(tmp_path, text)

    message = _refused(path)

    assert "\n" not in message, message
    assert message.startswith(f"{path}: sources.{second}: "), message
    assert f"sources.{first}" in message, message
    for secret in (*SECRETS, "jwt-secret", "digilocker-secret"):
        assert secret not in message


@pytest.mark.usefixtures("cli_env")
def test_two_instances_of_one_account_stop_the_pipeline_command_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _case, text, second, first = DOUBLED[0]

    line = _exit_2_with_one_line(_write(tmp_path, text), capsys)

    assert f"sources.{second}: " in line and f"sources.{first}" in line
    assert "soho-secret-token" not in line


def test_instances_that_differ_in_url_or_credentials_are_accounts_of_their_own(
    tmp_path: Path,
) -> None:
    """One server with several accounts (the tests' `instance_settings`), staging and
    production with one token, two Valomnia users of one company."""
    text = _instances(
        ("soho_a", 'type = "soho"\nbase_url = "http://127.0.0.1:5001/api/v1"\ntoken = "a"'),
        ("soho_b", 'type = "soho"\nbase_url = "http://127.0.0.1:5001/api/v1"\ntoken = "b"'),
        ("soho_c", 'type = "soho"\nbase_url = "http://127.0.0.1:5002/api/v1"\ntoken = "a"'),
        (
            "valomnia_a",
            'type = "valomnia"\nbase_url = "https://acme.valomnia.com"\n'
            'username = "etl"\npassword = "pw"',
        ),
        (
            "valomnia_b",
            'type = "valomnia"\nbase_url = "https://acme.valomnia.com"\n'
            'username = "audit"\npassword = "pw"',
        ),
    )

    loaded = load_settings(_write(tmp_path, text), {}, SOURCES)

    assert len(loaded.sources) == 5
