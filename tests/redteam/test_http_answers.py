"""Red team: answers no well-behaved server sends, and none may end as "internal error".

Whatever a source (or a broken proxy before it) answers, the stream ends either retried and
then failed as a classified source error, or failed at once with a message that names the
source, what it sent and what to do; never as the runner's catch-all "internal error ...
please report it". Covered: HTTP the parser refuses (Content-Length that is not a number, a
bad status line, a header line too long), bogus headers (Content-Type, Retry-After in every
shape), JSON nested far deeper than a parser recurses, JSON numbers and strings no parser
takes, on the raw-bytes path (`pipeline.extract.rawjson`) and the parsed path alike; and a
`Retry-After` asking for years, which must fail the run at once instead of being waited out.

Most answers come from the simulators (`pipeline.sandbox`, one stream per registered source,
the fault matrix's); what aiohttp's own server cannot send (malformed HTTP) comes from a raw
socket server of this module's own.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings, settings_from_mapping
from pipeline.errors import SourceHttpError
from pipeline.extract.http import HttpClient
from pipeline.extract.rawjson import MalformedJson, loads_keeping_records, loads_parsing_records
from pipeline.extract.responses import parse_retry_after
from pipeline.sandbox import (
    SANDBOXES,
    Fault,
    FaultTarget,
    HttpError,
    RunningSimulator,
    Simulator,
    serve,
)
from pipeline.sources import SOURCES
from pipeline.streams import Stream
from tests.helpers import make_settings, rows, sync

SEED = 93

# ---- a server of our own, for answers that are not HTTP --------------------------------------


class RawServer:
    """Answers each request with the next of `answers` (raw bytes, the last one repeated), then
    closes the connection: a server (or a proxy) that speaks broken HTTP."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            answer = self.answers[min(self.requests, len(self.answers) - 1)]
            self.requests += 1
            writer.write(answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _answer(status_line: bytes, *headers: bytes, body: bytes = b"[]") -> bytes:
    return status_line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


JSON = b"Content-Type: application/json"

# (id, answer). aiohttp's parser refuses each with a ClientResponseError, which the client did
# not catch: it reached the runner as "internal error ClientResponseError ... please report it".
MALFORMED_HTTP: list[tuple[str, bytes]] = [
    ("Content-Length not a number", _answer(b"HTTP/1.1 200 OK", JSON, b"Content-Length: abc")),
    ("Content-Length negative", _answer(b"HTTP/1.1 200 OK", JSON, b"Content-Length: -2")),
    (
        "two Content-Lengths",
        _answer(b"HTTP/1.1 200 OK", JSON, b"Content-Length: 2", b"Content-Length: 3"),
    ),
    (
        "Content-Length overflowing",
        _answer(b"HTTP/1.1 200 OK", JSON, b"Content-Length: 99999999999999999999999999"),
    ),
    ("status not a number", _answer(b"HTTP/1.1 2x0 OK", JSON, b"Content-Length: 2")),
    ("not HTTP at all", b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
    (
        "a header line of 20 KB",
        _answer(b"HTTP/1.1 200 OK", JSON, b"X-Junk: " + b"a" * 20_000, b"Content-Length: 2"),
    ),
    (
        "a chunk size that is not hex",
        _answer(
            b"HTTP/1.1 200 OK", JSON, b"Transfer-Encoding: chunked", body=b"zz\r\n[]\r\n0\r\n\r\n"
        ),
    ),
]
GOOD = _answer(b"HTTP/1.1 200 OK", JSON, b"Content-Length: 2")


def _client(url: str, **options: Any) -> HttpClient:
    return HttpClient("hostile", url, backoff_seconds=0.01, timeout_seconds=3, **options)


def _assert_one_line_for_a_person(message: str) -> None:
    assert "\n" not in message and "\r" not in message, repr(message)
    assert "internal error" not in message and "please report it" not in message, message
    assert len(message) < 700, message


@pytest.mark.parametrize("answer", [pytest.param(c[1], id=c[0]) for c in MALFORMED_HTTP])
async def test_a_malformed_http_answer_is_retried_then_fails_as_a_source_error(
    answer: bytes,
) -> None:
    async with RawServer(answer) as server, _client(server.url, max_retries=2) as client:
        with pytest.raises(SourceHttpError) as caught:
            await client.get("/x")

    assert server.requests == 3  # retried, as a truncated body is
    assert caught.value.attempts == 3
    _assert_one_line_for_a_person(str(caught.value))
    assert "not valid HTTP" in str(caught.value)


async def test_a_malformed_http_answer_once_is_survived() -> None:
    async with RawServer(MALFORMED_HTTP[0][1], GOOD) as server, _client(server.url) as client:
        response = await client.get("/x")

    assert response.body == [] and server.requests == 2


def _soho_at(url: str, **extra: Any) -> Settings:
    body = {"base_url": f"{url}/api/v1", "token": "soho-secret-token", "backoff_seconds": 0.01}
    return settings_from_mapping(
        {"sources": {"soho": {**body, "max_retries": 1, **extra}}}, {}, SOURCES
    )


@pytest.mark.parametrize(
    "answer", [pytest.param(c[1], id=c[0]) for c in MALFORMED_HTTP[:1] + MALFORMED_HTTP[4:5]]
)
async def test_a_malformed_http_answer_fails_the_stream_as_a_source_error(
    engine: AsyncEngine, answer: bytes
) -> None:
    async with RawServer(answer) as server:
        outcome = (await sync(engine, _soho_at(server.url)))["soho.customers"]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith("soho.customers: GET /customers failed after 2 attempts"), error
    _assert_one_line_for_a_person(error)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A login (Valomnia's form login) is one attempt, not retried; its failures to get an
# answer surfaced raw (TimeoutError, ClientConnectorError, ClientResponseError): "internal
# error ... please report it".
async def test_a_login_answered_with_broken_http_fails_as_a_source_error(
    engine: AsyncEngine,
) -> None:
    async with RawServer(MALFORMED_HTTP[0][1]) as server:
        outcome = (await sync(engine, _valomnia_at(server.url)))["valomnia.authorities"]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith("valomnia.authorities: POST /j_spring_security_check failed"), error
    assert "not valid HTTP" in error
    _assert_one_line_for_a_person(error)


async def test_a_login_that_reaches_no_server_fails_as_a_source_error(
    engine: AsyncEngine,
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"

    outcome = (await sync(engine, _valomnia_at(url)))["valomnia.authorities"]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith("valomnia.authorities: POST /j_spring_security_check failed"), error
    assert "valomnia-secret-password" not in error
    _assert_one_line_for_a_person(error)


def _valomnia_at(url: str) -> Settings:
    body = {"base_url": url, "username": "etl", "password": "valomnia-secret-password"}
    return settings_from_mapping(
        {"sources": {"valomnia": {**body, "max_retries": 1, "backoff_seconds": 0.01}}},
        {},
        SOURCES,
    )


# ---- bogus headers on an answer that is otherwise fine ---------------------------------------

# (id, Content-Type header, body accepted?). The charset of a JSON body is UTF-8 whatever the
# header says (RFC 8259), so a bogus charset is no reason to refuse the body; a type that is
# not JSON is retried, and its text, the server's, is shown short.
CONTENT_TYPES: list[tuple[str, bytes, bool]] = [
    ("not ASCII", b"Content-Type: \xff\xfe/;;;=", False),
    ("8 KB long", b"Content-Type: text/" + b"x" * 8000, False),
    ("JSON with a bogus charset", b'Content-Type: application/json; charset="nope', True),
    ("empty", b"Content-Type:", False),
]


@pytest.mark.parametrize(
    ("header", "accepted"), [pytest.param(*c[1:], id=c[0]) for c in CONTENT_TYPES]
)
async def test_a_bogus_content_type_is_judged_and_shown_short(
    header: bytes, accepted: bool
) -> None:
    answer = _answer(b"HTTP/1.1 200 OK", header, b"Content-Length: 2")
    async with RawServer(answer) as server, _client(server.url, max_retries=1) as client:
        if accepted:
            assert (await client.get("/x")).body == []
            return
        with pytest.raises(SourceHttpError) as caught:
            await client.get("/x")

    assert server.requests == 2
    _assert_one_line_for_a_person(str(caught.value))
    assert "expected JSON" in str(caught.value)


async def test_a_redirect_to_an_unreadable_location_fails_as_a_source_error() -> None:
    answer = _answer(
        b"HTTP/1.1 302 Found", b"Location: http://[::1/x", b"Content-Length: 0", body=b""
    )
    async with RawServer(answer) as server, _client(server.url, max_retries=1) as client:
        with pytest.raises(SourceHttpError) as caught:
            await client.get("/x")

    _assert_one_line_for_a_person(str(caught.value))
    assert "Location" in str(caught.value)


# ---- Retry-After in every shape --------------------------------------------------------------


def _http_date(delta: timedelta) -> str:
    return format_datetime(datetime.now(UTC) + delta, usegmt=True)


# Values that ask for no wait a client should honour: each must be read as no Retry-After
# (back off as usual) or as no wait at all. Before: "inf", "1e400" and "1_000" (Python's float
# takes underscores) were waited 300 s each; a date in the year 10^20 raised OverflowError
# out of the response classification ("internal error").
HARMLESS_RETRY_AFTER: list[tuple[str, Callable[[], str]]] = [
    ("garbage", lambda: "soon-ish"),
    ("negative", lambda: "-5"),
    ("nan", lambda: "nan"),
    ("inf", lambda: "inf"),
    ("1e400", lambda: "1e400"),
    ("underscored digits", lambda: "1_000"),
    ("a date in the past", lambda: _http_date(-timedelta(days=3))),
    ("a date that does not parse", lambda: "Mon, 99 Foo 2026 25:61:61 GMT"),
    ("a date in the year 10^20", lambda: "Mon, 01 Jan 100000000000000000000 00:00:00 GMT"),
]


@pytest.mark.parametrize("value", [pytest.param(c[1], id=c[0]) for c in HARMLESS_RETRY_AFTER])
async def test_a_harmless_retry_after_is_survived_without_a_long_wait(
    engine: AsyncEngine, soho: RunningSimulator, value: Callable[[], str]
) -> None:
    soho.sim.faults.add(HttpError(429, retry_after=value()), times=1, after=1)
    started = time.monotonic()

    async with asyncio.timeout(30):
        outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    assert time.monotonic() - started < 10


HEADER_TEXT = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\A\s*[-+]?[0-9_]{0,30}(\.[0-9]{0,10})?([eE][-+]?[0-9]{1,5})?\s*\Z"),
    st.sampled_from(["inf", "-inf", "nan", "Infinity", "1e400", "\u0661\u0662", "0x10"]),
    st.builds(
        "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
        st.sampled_from(["Mon", "Fri", "Xyz"]),
        st.integers(-5, 10**6),
        st.sampled_from(["Jan", "Dec", "Foo"]),
        st.integers(-(10**25), 10**25),
        st.integers(-1, 10**4),
        st.integers(-1, 100),
        st.integers(-1, 100),
        st.sampled_from(["GMT", "-0000", "+9999", "UTC", ""]),
    ),
)


@settings(max_examples=500, deadline=None)
@given(value=HEADER_TEXT)
def test_parse_retry_after_never_raises_and_is_none_or_a_finite_wait(value: str) -> None:
    wait = parse_retry_after(value, now=1_800_000_000.0)

    assert wait is None or (math.isfinite(wait) and wait >= 0)


# ---- 4. a Retry-After asking for years -------------------------------------------------------


# (id, status, Retry-After). Before: each was waited 300 s in silence (the client's hidden
# cap), then asked again, up to max_retries times: 30 minutes of a run doing nothing.
TOO_LONG: list[tuple[str, int, Callable[[], str], str]] = [
    ("429, seconds", 429, lambda: "999999999", "999999999"),
    ("503, seconds", 503, lambda: "86400", "86400"),
    ("429, a date in 2100", 429, lambda: "Fri, 01 Jan 2100 00:00:00 GMT", "2100"),
    ("503, a date in a week", 503, lambda: _http_date(timedelta(days=7)), "GMT"),
]


@pytest.mark.parametrize(
    ("status", "value", "shown"), [pytest.param(*c[1:], id=c[0]) for c in TOO_LONG]
)
async def test_a_retry_after_beyond_the_cap_fails_at_once_naming_source_wait_and_setting(
    engine: AsyncEngine,
    soho: RunningSimulator,
    status: int,
    value: Callable[[], str],
    shown: str,
) -> None:
    soho.sim.faults.add(HttpError(status, retry_after=value()), times=None, after=1)
    started = time.monotonic()

    async with asyncio.timeout(30):
        settings = make_settings(soho, soho_extra={"max_concurrency": 1})
        outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "failed"
    assert time.monotonic() - started < 10
    error = outcome.error or ""
    _assert_one_line_for_a_person(error)
    assert error.startswith("soho.customers: "), error
    assert "soho asked to wait" in error and shown in error, error
    assert "max_retry_after_seconds" in error and "300" in error, error
    pages = [r.query.get("page") for r in soho.sim.requests if r.fault]
    assert len(pages) == len(set(pages)), "a request was retried instead of failing at once"


async def test_the_cap_is_the_sources_setting(engine: AsyncEngine, soho: RunningSimulator) -> None:
    soho.sim.faults.add(HttpError(429, retry_after="3"), times=1, after=1)
    settings = make_settings(soho, soho_extra={"max_retry_after_seconds": 2})

    async with asyncio.timeout(30):
        outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "failed"
    assert "asked to wait 3 s" in (outcome.error or "")
    assert "max_retry_after_seconds = 2" in (outcome.error or "")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda: "1", id="seconds"),
        pytest.param(lambda: _http_date(timedelta(seconds=2)), id="an HTTP date"),
    ],
)
async def test_a_retry_after_within_the_cap_is_logged_then_waited(
    engine: AsyncEngine,
    soho: RunningSimulator,
    log_text: Callable[[], str],
    value: Callable[[], str],
) -> None:
    soho.sim.faults.add(HttpError(429, retry_after=value()), times=1, after=1)
    settings = make_settings(soho, soho_extra={"max_retry_after_seconds": 5, "max_concurrency": 1})

    async with asyncio.timeout(30):
        outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    events = [orjson.loads(line) for line in log_text().splitlines() if line.startswith("{")]
    [retry] = [e for e in events if e.get("event") == "http_retry"]
    assert retry["source"] == "soho" and retry["status"] == 429
    assert 0.5 <= retry["retry_after_s"] <= 2.0 and retry["wait_s"] == retry["retry_after_s"]
    [faulted] = [r for r in soho.sim.requests if r.fault]
    [again] = [r for r in soho.sim.requests if r.query == faulted.query and r.seq > faulted.seq]
    assert again.at - faulted.at >= retry["wait_s"] - 0.05  # the wait really happened


# ---- hostile JSON, on every source's fault-matrix stream --------------------------------------


@dataclass(frozen=True)
class Target:
    source: str
    stream: Stream
    faults: FaultTarget[Any]

    @property
    def key(self) -> str:
        return f"{self.source}.{self.stream.name}"

    @property
    def raw(self) -> bool:
        """Whether its records stay the bytes the API sent (else they are parsed)."""
        from pipeline.run.fetch import records_stay_raw

        return records_stay_raw(self.stream, self.faults.page_size or 100)


def _targets() -> list[Target]:
    found = []
    for name, sandbox in SANDBOXES.items():
        (stream,) = [s for s in SOURCES[name].streams if s.name == sandbox.faults.stream]
        found.append(Target(name, stream, sandbox.faults))
    return found


TARGETS = _targets()
PATHS = {True: "raw", False: "parsed"}
assert {t.raw for t in TARGETS} == {True, False}, "both paths must be among the targets"


@pytest.fixture(params=TARGETS, ids=[f"{t.key} ({PATHS[t.raw]})" for t in TARGETS])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Target, RunningSimulator]]:
    spec: Target = request.param
    async with serve(spec.faults.make(SEED)) as running:
        yield spec, running


def _settings(spec: Target, running: RunningSimulator, **source: Any) -> Settings:
    streams = {}
    if spec.faults.page_size is not None:
        streams = {spec.key: {"page_size": spec.faults.page_size}}
    extra = {spec.source: {"max_retries": 2, **source}}
    return make_settings(**{spec.source: running}, extra=extra, streams=streams)


def _deep(depth: int, closed: bool = True) -> bytes:
    return b"[" * depth + (b"]" * depth if closed else b"")


# Bodies no parser here can read: msgspec raised RecursionError beyond ~1,000 levels (not a
# ValueError, so "internal error"), orjson refuses beyond 1,024. Each must be retried as a
# malformed body, and survived when it comes once.
UNREADABLE: list[tuple[str, bytes]] = [
    ("arrays nested 100,000 deep", _deep(100_000)),
    ("arrays nested 100,000 deep, never closed", _deep(100_000, closed=False)),
    ("objects nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("arrays nested 2,000 deep", _deep(2_000)),
]


@pytest.mark.parametrize("body", [pytest.param(c[1], id=c[0]) for c in UNREADABLE])
async def test_a_body_nested_too_deep_is_retried_and_survived(
    engine: AsyncEngine, target: tuple[Target, RunningSimulator], body: bytes
) -> None:
    spec, running = target
    after = 0 if spec.faults.page_size is None else 1
    fault = HttpError(200, body=body, content_type="application/json")
    running.sim.faults.add(fault, times=1, after=after, path_prefix=spec.faults.list_path)

    outcome = (await sync(engine, _settings(spec, running), spec.key))[spec.key]

    assert outcome.status == "succeeded", outcome.error
    assert any(r.fault for r in running.sim.requests)


@pytest.mark.parametrize("body", [pytest.param(c[1], id=c[0]) for c in UNREADABLE[:1]])
async def test_a_body_nested_too_deep_every_time_fails_as_a_source_error(
    engine: AsyncEngine, target: tuple[Target, RunningSimulator], body: bytes
) -> None:
    spec, running = target
    fault = HttpError(200, body=body, content_type="application/json")
    running.sim.faults.add(fault, times=None, path_prefix=spec.faults.list_path)

    outcome = (await sync(engine, _settings(spec, running), spec.key))[spec.key]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith(f"{spec.key}: ") and "after 3 attempts" in error, error
    assert "not valid JSON" in error and "nested" in error, error
    _assert_one_line_for_a_person(error)


class Inject(Fault):
    """The normal answer, with `"<field>": <value>` put into one record of its list (the first
    or the last), as the API's own serialiser might have written it. Without `field`, a key
    no column reads (`hostile`) opens the record; with it, the field is written again at the
    record's end, where its last value wins (a typed column, the primary key)."""

    def __init__(
        self,
        records_key: bytes | None,
        wrapper: bytes | None,
        value: bytes,
        last: bool = False,
        field: bytes | None = None,
    ) -> None:
        self.records_key = records_key
        self.wrapper = wrapper
        self.value = value
        self.last = last
        self.field = field

    async def respond(self, sim: Simulator, request: web.Request, serve: Any) -> web.Response:
        normal = await serve()
        body = bytes(normal.body)
        start = 0 if self.records_key is None else body.index(b'"%s":[' % self.records_key)
        at = body.index(b"[{", start) + 1
        if self.last:
            at = _last_element(body, at)
        if self.wrapper is not None:  # the record is an object inside its list element
            at = body.index(b'"%s":{' % self.wrapper, at) + len(self.wrapper) + 3
        if self.field is None:
            body = body[: at + 1] + b'"hostile":' + self.value + b"," + body[at + 1 :]
        else:
            end = _object_end(body, at)
            body = body[:end] + b',"%s":' % self.field + self.value + body[end:]
        content_type = normal.headers.get("Content-Type", sim.json_content_type)
        return web.Response(status=normal.status, body=body, headers={"Content-Type": content_type})

    @classmethod
    def into(cls, spec: Target, value: bytes, last: bool, field: bytes | None = None) -> Inject:
        paginator = spec.stream.paginator(spec.faults.page_size or 100)
        records_key = paginator.records_path[-1].encode() if paginator.records_path else None
        wrapper = spec.stream.record_path[-1].encode() if spec.stream.record_path else None
        return cls(records_key, wrapper, value, last, field)


def _last_element(body: bytes, first: int) -> int:
    """Where the list's last object element starts: the last `{` at depth one of the list
    whose first element starts at `first` (the simulators write compact JSON, and no
    bracket inside a string)."""
    depth, last = 0, first
    for i in range(first, len(body)):
        byte = body[i]
        if byte in b"{[":
            if depth == 0:
                last = i
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth < 0:
                return last
    return last


def _object_end(body: bytes, start: int) -> int:
    """The index of the `}` closing the object that opens at `start`."""
    depth = 0
    for i in range(start, len(body)):
        if body[i] in b"{[":
            depth += 1
        elif body[i] in b"}]":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unclosed object")


# Values inside one record. Either the record is quarantined (it cannot be stored, its JSON
# does not parse) and the rest of the page loads, or the whole body is refused as malformed
# and retried: never an internal error. Before: a record nested 300 deep on the parsed path
# raised orjson's "Recursion limit reached" (a TypeError) out of the loader.
IN_A_RECORD: list[tuple[str, bytes]] = [
    ("nested 300 deep", _deep(300)),
    ("nested 1,000 deep", _deep(1_000)),
    ("a number beyond a double", b"1e400"),
    ("an integer of 5,000 digits", b"1" * 5_000),
    ("a negative number beyond a double", b"-1" + b"0" * 400),
    ("a lone surrogate", b'"\\ud800"'),
    ("a string of 1 MB", b'"' + b"x" * 1_000_000 + b'"'),
]


async def _check_sync(
    engine: AsyncEngine, spec: Target, running: RunningSimulator, fault: Fault
) -> None:
    running.sim.faults.add(fault, times=1, path_prefix=spec.faults.list_path)

    outcome = (await sync(engine, _settings(spec, running), spec.key))[spec.key]

    if outcome.status != "succeeded":  # refused as a whole: retried, then a source error
        _assert_one_line_for_a_person(outcome.error or "")
        return
    quarantined = await rows(engine, "SELECT reason, raw FROM pipeline.quarantine")
    assert len(quarantined) <= 1
    for row in quarantined:
        assert row.reason and len(row.reason) < 500, row.reason


@pytest.mark.parametrize("last", [False, True], ids=["first record", "last record"])
@pytest.mark.parametrize("value", [pytest.param(c[1], id=c[0]) for c in IN_A_RECORD])
async def test_a_hostile_value_in_a_record_never_ends_as_an_internal_error(
    engine: AsyncEngine, target: tuple[Target, RunningSimulator], value: bytes, last: bool
) -> None:
    spec, running = target

    await _check_sync(engine, spec, running, Inject.into(spec, value, last))


@pytest.mark.parametrize("value", [pytest.param(c[1], id=c[0]) for c in IN_A_RECORD])
async def test_a_hostile_primary_key_never_ends_as_an_internal_error(
    engine: AsyncEngine, target: tuple[Target, RunningSimulator], value: bytes
) -> None:
    """The value lands in a typed column (the key), whose converter judges it."""
    spec, running = target
    if spec.stream.primary_key.derive is not None:
        pytest.skip(f"{spec.key}: its key is derived, not a field of the record")
    key = ".".join(spec.stream.primary_key.source_path).encode()

    await _check_sync(engine, spec, running, Inject.into(spec, value, last=True, field=key))


# ---- error bodies: the source's words, whatever their shape -----------------------------------

# Error bodies are summarised for the message; orjson.dumps stops at 254 levels, and a
# TypeError out of the summary reached the runner as an internal error.
ERROR_BODIES: list[tuple[str, bytes]] = [
    ("arrays nested 300 deep", _deep(300)),
    ("a message nested 900 deep", b'{"message":' + _deep(900) + b"}"),
    ("arrays nested 100,000 deep", _deep(100_000)),
    ("a number beyond a double", b'{"message": 1e400}'),
]


@pytest.mark.parametrize("status", [404, 500])
@pytest.mark.parametrize("body", [pytest.param(c[1], id=c[0]) for c in ERROR_BODIES])
async def test_a_hostile_error_body_is_summarised_short(
    engine: AsyncEngine, soho: RunningSimulator, status: int, body: bytes
) -> None:
    fault = HttpError(status, body=body, content_type="application/json")
    soho.sim.faults.add(fault, times=None, path_prefix="/api/v1/customers")

    outcome = (await sync(engine, make_settings(soho, soho_extra={"max_retries": 1})))[
        "soho.customers"
    ]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith("soho.customers: GET /customers failed"), error
    assert f"HTTP {status}" in error
    _assert_one_line_for_a_person(error)


# ---- bounded time and memory ------------------------------------------------------------------


# A valid body of the same size: one long string.
def _reference(size: int, enveloped: bool) -> bytes:
    if enveloped:
        return b'{"data":["' + b"x" * (size - 13) + b'"]}'
    return b'["' + b"x" * (size - 4) + b'"]'


def _peak(loads: Callable[..., Any], body: bytes, path: tuple[str, ...]) -> tuple[int, float]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        loads(body, path)
    except MalformedJson:
        pass  # refused: retried by the client
    finally:
        elapsed = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, elapsed


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_deep(4_000_000), id="8 MB of nested arrays"),
        pytest.param(_deep(4_000_000, closed=False), id="4 MB of [ never closed"),
        pytest.param(b'{"a":' * 1_000_000 + b"1" + b"}" * 1_000_000, id="6 MB of nested objects"),
        pytest.param(b"[" + b"1" * 8_000_000 + b"]", id="an 8 MB number"),
    ],
)
@pytest.mark.parametrize("path", [(), ("data",)], ids=["bare list", "enveloped"])
@pytest.mark.parametrize(
    "loads", [loads_keeping_records, loads_parsing_records], ids=["raw path", "parsed path"]
)
def test_a_hostile_body_is_judged_in_bounded_time_and_memory(
    body: bytes, path: tuple[str, ...], loads: Callable[..., Any]
) -> None:
    if path:
        body = b'{"data":' + body + b"}"
    reference = _reference(len(body), enveloped=bool(path))

    peak, elapsed = _peak(loads, body, path)
    reference_peak, reference_elapsed = _peak(loads, reference, path)

    assert elapsed < max(2.0, 10 * reference_elapsed)
    # Bounded by the body (itself capped by max_response_mb), as a valid body is: orjson's
    # document, the most a valid body costs, is about 13 times its input.
    bound = 16 * len(body) + (1 << 20)
    assert reference_peak <= bound and peak <= bound, (peak, reference_peak, len(body))
