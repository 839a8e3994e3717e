"""The dashboard's red-team findings, each under its number: the tests that failed on the code
before its fix, beside a twin or two that show the plain case still works.

Everything runs for real: the dashboard served by its own `serve()` (its parser limits, no test
client in between), requests sent byte for byte (`yarl.URL(..., encoded=True)`, or a raw socket
where even that client would refuse), a migrated Postgres, logins made with `tests.roles`, and
the `pipeline dashboard` command in a subprocess where the finding is about starting it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_urlsafe
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from pipeline import db
from pipeline.config import settings_from_mapping
from pipeline.dashboard import build_app, serve
from pipeline.settings import ExecutionSettings
from pipeline.sources import SOURCES
from tests.helpers import execute
from tests.roles import login_in

KEY = "soho.customers"
SETTINGS = settings_from_mapping(
    {"sources": {"soho": {"base_url": "http://127.0.0.1:9/api/v1", "token": "redteam"}}},
    {},
    SOURCES,
    label="(redteam)",
)
# With the queue backend the jobs page reads too: every page then touches the database.
QUEUED = dataclasses.replace(SETTINGS, execution=ExecutionSettings(backend="queue"))
PAGES = ["/", f"/streams/{KEY}", "/quarantine", "/drift", "/jobs"]
TOKEN = token_urlsafe(32)  # 43 characters, as the README tells an operator to make one

# What every answer carries, refusals and errors included: the oracle, written out here
# rather than imported, so a header dropped from the code's table fails.
GUARD_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def assert_guarded(headers: Mapping[str, str], where: str) -> None:
    for name, value in GUARD_HEADERS.items():
        assert headers.get(name) == value, f"{where}: {name} is {headers.get(name)!r}"
    policy = headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, where


# ---- serving for real ------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """`app` behind `pipeline.dashboard.serve` on a free port; yields the base URL."""
    port = free_port(host)
    stop, up = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(app, host, port, stop, ready=up.set))
    waiting = asyncio.create_task(up.wait())
    await asyncio.wait({task, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # its error, if it failed to start
    assert up.is_set(), "the dashboard did not start listening within 10 s"
    try:
        yield f"http://{host}:{port}"
    finally:
        stop.set()
        await task


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]


async def get(base: str, target: str, headers: Mapping[str, str] | None = None) -> Answer:
    """GET `target` exactly as written (no re-quoting), redirects not followed."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            URL(base + target, encoded=True), headers=dict(headers or {}), allow_redirects=False
        ) as response,
    ):
        return Answer(response.status, response.headers, await response.text(errors="replace"))


async def raw_request(base: str, head: bytes) -> tuple[int, bytes]:
    """Send `head` (a request line and headers) as bytes; the status and the body back."""
    url = URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def missing_database(server_url: str) -> str:
    """A URL of the test server naming a database that does not exist: a command that gets
    past its own checks stops there at once (exit 2), instead of serving."""
    return str(URL(server_url).with_path("/pipeline_redteam_no_such_database"))


# ---- one database for the module, read by a login in pipeline_dashboard ----------------------


@pytest.fixture(scope="module")
async def redteam_db(pg_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"pipeline_test_redteam_dashboard_{os.getpid()}"
    url = await db.recreate_database(pg_server_url, name, template=template_database)
    owner = db.create_engine(url, pool_size=1)
    try:
        await execute(
            owner,
            "INSERT INTO pipeline.quarantine (run_id, stream, record_key, reason, raw) "
            "SELECT gen_random_uuid(), :k, n::text, 'not an ISO-8601 timestamp: ''soon''', "
            "'{\"id\": ' || n || '}' FROM generate_series(1, 3) n",
            k=KEY,
        )
    finally:
        await owner.dispose()
    yield url
    await db.drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
async def reader(redteam_db: str) -> AsyncIterator[AsyncEngine]:
    async with login_in(redteam_db, "pipeline_dashboard") as url:
        engine = db.create_engine(url, pool_size=3, read_only=True)
        yield engine
        await engine.dispose()


@pytest.fixture(scope="module")
async def site(reader: AsyncEngine) -> AsyncIterator[str]:
    """The open (token-less) dashboard on 127.0.0.1, as `pipeline dashboard` runs it."""
    async with served(build_app(reader, SETTINGS)) as base:
        yield base


@asynccontextmanager
async def dashboard_command(
    args: list[str], env: Mapping[str, str], cwd: Path, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`pipeline dashboard ARGS` in a subprocess, until it says it listens; yields its base
    URL. Stopped with SIGTERM afterwards, which must end it with exit 0."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pipeline", "--log-format", "json", "dashboard", "--port", str(port), *args),
        env={**clean, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    ready = await asyncio.wait_for(process.stdout.readline(), 30)
    if not ready:
        _, err = await asyncio.wait_for(process.communicate(), 20)
        pytest.fail(
            f"pipeline dashboard exited {process.returncode} before listening:\n"
            f"{err.decode()[-3000:]}"
        )
    assert f":{port}/" in ready.decode(), ready
    try:
        yield f"http://{host}:{port}", process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
    assert process.returncode == 0, process.returncode


# ---- 1. DNS rebinding: a Host that is not ours ----------------------------------------------


async def test_a_host_name_that_is_not_ours_is_refused_before_anything_is_read(
    site: str,
) -> None:
    """A page on evil.example whose name rebinds to 127.0.0.1 reaches the loopback dashboard
    with `Host: evil.example`; it must get nothing but a refusal."""
    port = URL(site).port
    for host in (
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.nip.io:{port}",
        f"localhost.evil.example:{port}",
        f"[::2]:{port}",
        f"0.0.0.0:{port}",
        f"127.0.0.2:{port}",
        f"127.0.0.1@evil.example:{port}",
    ):
        for path in ("/api/quarantine", "/quarantine", "/", "/metrics", "/static/dashboard.css"):
            answer = await get(site, path, headers={"Host": host})
            where = f"Host {host} {path}"
            assert answer.status == 421, f"{where}: {answer.status} {answer.text[:200]}"
            assert_guarded(answer.headers, where)
            assert answer.content_type == "text/plain", where
            assert host in answer.text and "--allow-host" in answer.text, answer.text
            assert "PIPELINE_DASHBOARD_HOSTS" in answer.text and answer.text.count("\n") == 1
            assert "soon" not in answer.text  # no record
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LocalHost", f"[::1]:{port}"):
        answer = await get(site, "/api/quarantine", headers={"Host": host})
        assert answer.status == 200, f"Host {host}: {answer.status} {answer.text[:200]}"
        assert_guarded(answer.headers, f"Host {host}")
    # No Host at all, an empty one, or two: nothing a browser sends; refused too.
    for head in (
        b"GET /api/quarantine HTTP/1.0\r\n\r\n",
        b"GET /api/quarantine HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        b"GET /api/quarantine HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
        b"Connection: close\r\n\r\n",
    ):
        status, body = await raw_request(site, head)
        assert status in (400, 421), (head, status, body[:200])
        assert b"soon" not in body


async def test_the_bound_address_and_configured_names_are_answered(reader: AsyncEngine) -> None:
    from pipeline.dashboard.hosts import allowed_names

    allowed = allowed_names("127.0.0.2", ["Dash.Example", "[fd00::1]"])
    async with served(build_app(reader, SETTINGS, allowed_hosts=allowed), host="127.0.0.2") as base:
        port = URL(base).port
        for host in (f"127.0.0.2:{port}", f"dash.example:{port}", "DASH.example", "[fd00::1]:80"):
            answer = await get(base, "/api/overview", headers={"Host": host})
            assert answer.status == 200, f"Host {host}: {answer.status} {answer.text[:200]}"
        answer = await get(base, "/api/overview", headers={"Host": f"other.example:{port}"})
        assert answer.status == 421
    # A wildcard bind is no name: loopback and configured names only.
    assert allowed_names("0.0.0.0", ["dashboard"]) == {"localhost", "127.0.0.1", "::1", "dashboard"}
    assert allowed_names("::", []) == {"localhost", "127.0.0.1", "::1"}


async def test_the_command_answers_names_from_allow_host_and_the_environment_on_a_wildcard_bind(
    redteam_db: str, tmp_path: Path
) -> None:
    """`--host 0.0.0.0` (as in docker-compose.yml): the bound address is not a name, so
    `Host: 0.0.0.0` is refused; loopback names and the configured ones pass."""
    async with (
        login_in(redteam_db, "pipeline_dashboard") as url,
        dashboard_command(
            ["--host", "0.0.0.0", "--allow-host", "dash.example", "--allow-host", "Second.Example"],
            {
                "DATABASE_URL": url,
                "PIPELINE_DASHBOARD_TOKEN": TOKEN,
                "PIPELINE_DASHBOARD_HOSTS": " dashboard, third.example:8765 ,",
            },
            tmp_path,
        ) as (base, _),
    ):
        port = URL(base).port
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for host in ("127.0.0.1", "localhost", "dash.example", "second.example", "dashboard"):
            answer = await get(base, "/metrics", headers={**bearer, "Host": f"{host}:{port}"})
            assert answer.status == 200, f"Host {host}: {answer.status} {answer.text[:200]}"
        for host in ("0.0.0.0", "evil.example", "third.example.evil"):
            answer = await get(base, "/api/overview", headers={**bearer, "Host": f"{host}:{port}"})
            assert answer.status == 421, f"Host {host}: {answer.status}"
            assert_guarded(answer.headers, host)
        answer = await get(base, "/api/overview", headers={**bearer, "Host": "third.example"})
        assert answer.status == 200


async def test_every_answer_carries_the_security_headers_errors_and_bugs_included(
    reader: AsyncEngine,
) -> None:
    """X-Frame-Options beside the CSP on pages, files, refusals and a handler's bug (which
    aiohttp would answer itself, with none of them)."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    async with served(build_app(reader, SETTINGS, metrics=broken)) as base:
        for path, status in (
            ("/api/overview", 200),
            ("/drift", 200),
            ("/static/dashboard.css", 200),
            ("/streams/nosuch.stream", 404),
            ("/static/nosuch.css", 404),
            ("/nosuch", 404),
            ("/metrics", 500),
        ):
            answer = await get(base, path)
            assert answer.status == status, f"{path}: {answer.status} {answer.text[:200]}"
            assert_guarded(answer.headers, path)
        assert "a bug in a handler" not in answer.text and "Traceback" not in answer.text
        async with aiohttp.ClientSession() as http, http.post(f"{base}/quarantine") as posted:
            assert posted.status == 405
            assert_guarded(posted.headers, "POST")


@pytest.mark.parametrize(
    "args, env, wrong",
    [
        (["--allow-host", "evil example"], {}, "--allow-host"),
        (["--allow-host", "*"], {}, "--allow-host"),
        ([], {"PIPELINE_DASHBOARD_HOSTS": "ok.example,a/b"}, "PIPELINE_DASHBOARD_HOSTS"),
    ],
)
def test_a_malformed_allowed_name_is_refused_at_start(
    args: list[str],
    env: dict[str, str],
    wrong: str,
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # A database that does not exist: should the names pass, the command stops there at once.
    monkeypatch.setenv("DATABASE_URL", missing_database(pg_server_url))
    assert main(["dashboard", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and wrong in err and "host name" in err, err


# ---- 2. odd parameters: 400 or 404, never 500 or a false "database unreachable" --------------

# name: the value as it is sent (already percent-encoded where it must be)
ODD_VALUES = {
    "arabic-indic digits": quote("\u0661\u0662\u0663"),
    "superscript two": quote("²"),
    "fullwidth digits": quote("\uff11\uff12\uff13"),
    "beyond bigint": "9" * 30,
    "bigint max + 1": str(2**63),
    "negative": "-1",
    "100 KB": "9" * 100_000,
    "NUL": "%00",
    "escape": "%1B",
    "newline": "a%0Ab",
    "DEL": "%7F",
    "C1 next line": "%C2%85",
    "bad percent-encoding": "%zz",
    "cut percent-encoding": "1%4",
    "invalid UTF-8": "%FF",
    "truncated UTF-8": "%C3%28",
    "surrogate in UTF-8": "%ED%A0%80",
}
# Odd but well-formed text: as a filter it matches nothing, as a stream key it names none.
WELL_FORMED_TEXT = {
    "arabic-indic digits",
    "superscript two",
    "fullwidth digits",
    "beyond bigint",
    "bigint max + 1",
    "negative",
}
ROUTES = {
    "before": ("/quarantine?before={}", "/api/quarantine?before={}"),
    "stream": ("/quarantine?stream={}", "/api/quarantine?stream={}"),
    "reason": ("/quarantine?reason={}", "/api/quarantine?reason={}"),
    "key": ("/streams/{}", "/api/streams/{}"),
}
ROUTE_CASES = [(param, route) for param, routes in ROUTES.items() for route in routes]


def expected_status(param: str, case: str) -> int:
    if param == "before" or case not in WELL_FORMED_TEXT:
        return 400  # a record id is ASCII digits within bigint; text is printable UTF-8
    return 404 if param == "key" else 200


@pytest.mark.parametrize("case", list(ODD_VALUES))
@pytest.mark.parametrize("param, route", ROUTE_CASES, ids=[r for _, r in ROUTE_CASES])
async def test_odd_parameters_answer_400_or_404_never_500_or_503(
    site: str, param: str, route: str, case: str
) -> None:
    target = route.format(ODD_VALUES[case])
    answer = await get(site, target)
    where = f"{target[:80]} ({case})"
    assert answer.status == expected_status(param, case), (
        f"{where}: {answer.status} {answer.text[:300]}"
    )
    assert_guarded(answer.headers, where)
    assert "cannot read the database" not in answer.text and "unreachable" not in answer.text
    if answer.status == 200:
        if route.startswith("/api/"):
            assert json.loads(answer.text)["matching"] == 0, where
        return
    assert answer.content_type == "text/plain", where
    assert len(answer.text) < 400 and answer.text.count("\n") == 1, (where, answer.text[:500])
    if answer.status == 400:
        assert param in answer.text or "URL" in answer.text, (where, answer.text)


async def test_plain_parameters_still_answer(site: str) -> None:
    """The twin of the table above: what the pages themselves link to keeps working."""
    for target in (
        "/api/quarantine?before=9223372036854775807",
        f"/api/quarantine?stream={KEY}&reason={quote('not an ISO-8601 timestamp: …')}",
        f"/api/streams/{quote(KEY, safe='')}",
        "/quarantine?stream=&reason=&before=",
    ):
        answer = await get(site, target)
        assert answer.status == 200, f"{target}: {answer.status} {answer.text[:300]}"
    page = json.loads((await get(site, "/api/quarantine?stream=" + KEY)).text)
    assert page["matching"] == 3
    assert json.loads((await get(site, "/api/quarantine?before=0")).text)["records"] == []


async def test_bytes_the_http_parser_refuses_never_reach_a_page(site: str) -> None:
    """Raw control bytes and invalid UTF-8 in the request line (no browser sends them
    unencoded) are aiohttp's to refuse: 400, before any dashboard code or query runs."""
    for target in (b"/quarantine?before=\x00", b"/streams/\xff\xfe", b"/quarantine?reason=\x1b"):
        status, body = await raw_request(
            site, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert status == 400, (target, status, body[:200])
        assert b"database" not in body


# ---- 3. tokens: long enough, and a cookie that expires on the server -------------------------


@pytest.mark.parametrize("length", [1, 16, 31])
def test_a_short_token_is_refused_at_start_without_echoing_it(
    length: int,
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from pipeline.cli import main

    token = "Q" * length
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.setenv("PIPELINE_DASHBOARD_TOKEN", token)
    # A database that does not exist: should the token pass, the command stops there at once.
    monkeypatch.setenv("DATABASE_URL", missing_database(pg_server_url))
    assert main(["dashboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "PIPELINE_DASHBOARD_TOKEN" in err and "at least 32" in err, err
    assert "secrets.token_urlsafe(32)" in err
    assert token not in err


def test_a_token_of_32_characters_passes_the_check(
    pg_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.setenv("PIPELINE_DASHBOARD_TOKEN", "Q" * 32)
    monkeypatch.setenv("DATABASE_URL", missing_database(pg_server_url))
    assert main(["dashboard"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "at least 32" not in err, err


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_the_token_cookie_expires_on_the_server(reader: AsyncEngine) -> None:
    """The cookie `?token=` gives must stop opening pages after its lifetime, whatever the
    browser does with max_age: a cookie copied off a machine is not a key for ever."""
    clock = Clock()
    async with served(build_app(reader, SETTINGS, token=TOKEN, clock=clock)) as base:
        first = await get(base, f"/quarantine?token={TOKEN}")
        assert first.status == 303 and first.headers["Location"] == "/quarantine"
        cookie = first.headers["Set-Cookie"]
        value = cookie.split(";")[0].split("=", 1)[1]
        assert TOKEN not in cookie
        attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert "httponly" in attributes and "samesite" in attributes
        assert int(attributes["max-age"].split("=")[1]) <= 12 * 3600
        with_cookie = {"Cookie": f"pipeline_dashboard={value}"}
        assert (await get(base, "/api/overview", headers=with_cookie)).status == 200
        clock.now += timedelta(hours=11, minutes=59)
        assert (await get(base, "/api/overview", headers=with_cookie)).status == 200
        clock.now += timedelta(minutes=2)
        late = await get(base, "/api/overview", headers=with_cookie)
        assert late.status == 401, f"a cookie 12 h 1 min old still opens pages: {late.status}"
        assert_guarded(late.headers, "expired cookie")
        assert "?token=" in late.text
        # The token itself still works, and gives a fresh cookie.
        again = await get(base, f"/api/overview?token={TOKEN}")
        assert again.status == 303


def forged(token: str, issued: float, *, key_of: str | None = None) -> str:
    """A cookie as the README describes it: `<issued, Unix seconds>.<HMAC-SHA256 of that
    number, keyed with HMAC-SHA256(token, "pipeline-dashboard-cookie")>`, in hex."""
    key = hmac.new(
        (key_of or token).encode(), b"pipeline-dashboard-cookie", hashlib.sha256
    ).digest()
    stamp = str(int(issued))
    return f"{stamp}.{hmac.new(key, stamp.encode(), hashlib.sha256).hexdigest()}"


async def test_a_forged_cookie_opens_nothing_unless_its_mac_and_age_hold(
    reader: AsyncEngine,
) -> None:
    clock = Clock()
    now = clock.now.timestamp()
    old_style = hmac.new(TOKEN.encode(), b"pipeline-dashboard-session", hashlib.sha256).hexdigest()
    good = forged(TOKEN, now - 60)
    async with served(build_app(reader, SETTINGS, token=TOKEN, clock=clock)) as base:

        async def status(cookie: str) -> int:
            answer = await get(
                base, "/api/quarantine", headers={"Cookie": f"pipeline_dashboard={cookie}"}
            )
            if answer.status != 200:
                assert_guarded(answer.headers, cookie[:40])
            return answer.status

        assert await status(good) == 200, "a cookie made by the documented rule is accepted"
        refused = {
            "issued 13 h ago": forged(TOKEN, now - 13 * 3600),
            "issued a year ago": forged(TOKEN, now - 365 * 86400),
            "issued in an hour": forged(TOKEN, now + 3600),
            "keyed with another token": forged(TOKEN, now, key_of=token_urlsafe(32)),
            "MAC of another time": good.split(".")[0] + "." + forged(TOKEN, now - 61).split(".")[1],
            "the old fixed digest": old_style,
            "no MAC": str(int(now)),
            "empty MAC": f"{int(now)}.",
            "huge time": "9" * 5000 + "." + "0" * 64,
            "negative time": forged(TOKEN, -1),
            "arabic-indic time": "\u0661\u0662\u0663." + "0" * 64,
            "not ASCII": "ä" * 70,
            "the token itself": TOKEN,
        }
        for name, cookie in refused.items():
            assert await status(cookie) == 401, name


async def test_odd_tokens_and_headers_are_refused_with_401_not_500(reader: AsyncEngine) -> None:
    async with served(build_app(reader, SETTINGS, token=TOKEN)) as base:
        for value in (
            "%00",
            "%FF",
            "%zz",
            quote("\u0661\u0662\u0663"),
            "9" * 100_000,
            quote(TOKEN + "\x00"),
        ):
            answer = await get(base, f"/api/overview?token={value}")
            assert answer.status in (400, 401), (value[:30], answer.status)
            assert_guarded(answer.headers, value[:30])
        for header in ("Bearer ", "Bearer " + "ä" * 50, "Bearer " + TOKEN[:-1], "Basic x"):
            answer = await get(base, "/api/overview", headers={"Authorization": header})
            assert answer.status == 401, header


# ---- 4. a login without the privileges: the dashboard's own page, not a traceback ------------


def assert_privilege_page(answer: Answer, login: str, where: str) -> None:
    fix = f'GRANT pipeline_dashboard TO "{login}"'
    assert answer.status == 503, f"{where}: {answer.status} {answer.text[:300]}"
    assert_guarded(answer.headers, where)
    if "/api/" in where:
        assert answer.content_type == "application/json", where
        body = json.loads(answer.text)
        assert body["error"] == "insufficient_privilege", body
        assert body["login"] == login and body["fix"] == fix + ";", body
        assert body["missing"].startswith(("SELECT on ", "USAGE on ")), body
    else:
        assert answer.content_type == "text/html", where
        assert "<h1>" in answer.text and fix.replace('"', "&#34;") in answer.text, answer.text
        assert "SELECT on " in answer.text or "USAGE on " in answer.text
    assert "unreachable" not in answer.text and "cannot reach" not in answer.text


@pytest.mark.parametrize("role", [None, "pipeline_analyst"], ids=["no-grants", "analyst"])
async def test_every_page_tells_a_login_without_rights_what_to_grant(
    redteam_db: str, role: str | None
) -> None:
    async with login_in(redteam_db, role) as url:
        login = URL(url).user or ""
        engine = db.create_engine(url, pool_size=2, read_only=True)
        owner = db.create_engine(redteam_db, pool_size=1)
        try:
            async with served(build_app(engine, QUEUED)) as base:
                for page in PAGES:
                    api = "/api/overview" if page == "/" else f"/api{page}"
                    for path in (page, api):
                        assert_privilege_page(await get(base, path), login, path)
                # The fix the page names works as it says: granted, the pages answer at once.
                await execute(owner, f'GRANT pipeline_dashboard TO "{login}"')
                for page in PAGES:
                    answer = await get(base, page)
                    assert answer.status == 200, f"{page}: {answer.status} {answer.text[:300]}"
        finally:
            await engine.dispose()
            await owner.dispose()


async def test_a_database_that_is_down_is_not_called_a_missing_privilege(
    reader: AsyncEngine,
) -> None:
    down = db.create_engine(
        str(URL("postgresql://dashboard:x@127.0.0.1").with_port(free_port())), pool_size=1
    )
    try:
        async with served(build_app(down, SETTINGS)) as base:
            for path in ("/quarantine", "/api/quarantine"):
                answer = await get(base, path)
                assert answer.status == 503, (path, answer.status)
                assert_guarded(answer.headers, path)
                assert "GRANT" not in answer.text and "cannot reach" in answer.text, answer.text
                if path.startswith("/api/"):
                    assert json.loads(answer.text)["error"] == "database_unavailable"
                else:
                    assert answer.content_type == "text/html"
    finally:
        await down.dispose()


@pytest.mark.parametrize("role", [None, "pipeline_analyst"], ids=["no-grants", "analyst"])
async def test_the_command_starts_as_a_login_without_rights_and_serves_the_privilege_page(
    redteam_db: str, role: str | None, tmp_path: Path
) -> None:
    """Before: the schema check's SELECT on alembic_version died in a traceback at start."""
    async with (
        login_in(redteam_db, role) as url,
        dashboard_command([], {"DATABASE_URL": url}, tmp_path) as (base, process),
    ):
        login = URL(url).user or ""
        for path in ("/", "/api/overview", "/quarantine", "/api/drift"):
            assert_privilege_page(await get(base, path), login, path)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    [warning] = [line for line in lines if line.get("event") == "dashboard_schema_not_checked"]
    assert warning["level"] == "warning"
    assert warning["login"] == login and warning["missing"] == "SELECT on table alembic_version"
    assert warning["fix"] == f'GRANT pipeline_dashboard TO "{login}";'
    assert "Traceback" not in err.decode()
    assert "reader-test-password" not in err.decode()
