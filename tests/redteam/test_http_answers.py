"""Red team: answers no well-behaved server sends, and none may end as "internal error".

Whatever a source (or a broken proxy before it) answers, the stream ends either retried and
then failed as a classified source error, or failed at once with a message that names the
source, what it sent and what to do; never as the runner's catch-all "internal error ...
please report it". Here: `Retry-After` in every shape, and a `Retry-After` asking for years,
which must fail the run at once instead of being waited out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.extract.responses import parse_retry_after
from pipeline.sandbox import HttpError, RunningSimulator
from tests.helpers import make_settings, sync


def _assert_one_line_for_a_person(message: str) -> None:
    assert "\n" not in message and "\r" not in message, repr(message)
    assert "internal error" not in message and "please report it" not in message, message
    assert len(message) < 700, message


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
