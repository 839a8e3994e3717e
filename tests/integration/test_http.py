"""The HTTP client's limits, seen from the server: concurrency cap, request rate, Retry-After."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.extract.http import RateLimiter, parse_retry_after
from pipeline.sandbox import RunningSimulator, SohoSimulator, serve
from tests.helpers import make_settings, sync


def _list_request_times(sim: SohoSimulator) -> list[float]:
    return sorted(r.at for r in sim.requests if r.path.endswith("/customers"))


def _max_within(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_pages_are_fetched_concurrently_up_to_the_cap(engine: AsyncEngine) -> None:
    async with serve(SohoSimulator(customers=300, seed=3, latency=0.15)) as soho:
        settings = make_settings(soho, soho_extra={"max_concurrency": 4})
        outcome = (await sync(engine, settings))["soho.customers"]
        assert outcome.status == "succeeded" and outcome.totals.inserted == 300
        times = _list_request_times(soho.sim)  # type: ignore[arg-type]
        # Requests in flight together start within a latency of each other: 4, never 5.
        assert _max_within(times, 0.1) == 4


async def test_one_connection_when_the_cap_is_one(engine: AsyncEngine) -> None:
    async with serve(SohoSimulator(customers=100, seed=3, latency=0.1)) as soho:
        settings = make_settings(soho, soho_extra={"max_concurrency": 1})
        await sync(engine, settings)
        assert _max_within(_list_request_times(soho.sim), 0.08) == 1  # type: ignore[arg-type]


async def test_requests_per_second_is_never_exceeded_at_the_server(engine: AsyncEngine) -> None:
    async with serve(SohoSimulator(customers=700, seed=4)) as soho:
        settings = make_settings(soho, soho_extra={"max_concurrency": 8, "requests_per_second": 20})
        outcome = (await sync(engine, settings))["soho.customers"]
        assert outcome.status == "succeeded"
        times = _list_request_times(soho.sim)  # type: ignore[arg-type]
        assert len(times) == 28
        assert _max_within(times, 1.0) <= 20


async def test_retry_after_as_seconds_is_waited_for(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    from pipeline.sandbox import HttpError

    soho.sim.faults.add(HttpError(429, retry_after="1"), times=1)
    started = time.monotonic()
    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]
    assert outcome.status == "succeeded"
    first, second = _list_request_times(soho.sim)[:2]  # type: ignore[arg-type]
    assert second - first >= 0.95  # the server asked for a second; backoff alone is 0.01 s
    assert time.monotonic() - started < 10


def test_parse_retry_after_both_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    in_30s = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(in_30s, now=now.timestamp()) == 30.0
    past = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(past, now=now.timestamp()) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_rate_limiter_spaces_starts_evenly() -> None:
    limiter = RateLimiter(50)
    starts = []
    for _ in range(26):
        await limiter.wait()
        starts.append(time.monotonic())
    assert _max_within(starts, 0.5) <= 25


async def test_a_start_that_wakes_late_does_not_shorten_the_gap_to_the_next() -> None:
    limiter = RateLimiter(50)  # starts 20.4 ms apart
    starts: list[float] = []

    async def start() -> None:
        await limiter.wait()
        starts.append(time.monotonic())

    await start()
    waiting = [asyncio.create_task(start()) for _ in range(3)]
    await asyncio.sleep(0)
    time.sleep(0.06)  # noqa: ASYNC251 (the event loop is busy past the next two due times)
    await asyncio.gather(*waiting)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= RateLimiter.MARGIN / 50 - 0.001, gaps
