"""Red-team finding "unbounded page walks": a source that claims `total_pages = 10**9` (records
on page 1 only) had every page asked for (80,000 requests in 45 s); paging fields that are not
what the API documents were guessed at.

- A counted walk ends on a run of empty pages past its records, loads what it read, and is
  not complete: it settles no absence and leaves the watermark (`pipeline.run.strategies.scan`).
- A bad paging field fails the stream, naming the field, never as an internal error.

Lying sources are the simulators with a `Rewrite` fault (a field or header replaced).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from pipeline.config import Settings
from pipeline.errors import ListEndedEarly
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import Page
from pipeline.run import StreamOutcome
from pipeline.sandbox import (
    AfostoSimulator,
    Rewrite,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
)
from tests.helpers import live_rows, make_settings, rows, sync
from tests.unit.paging import Answer, Server, response
from tests.unit.test_paginators import paginators

BILLION = 10**9
WATCHDOG_SECONDS = 20  # before the fix a walk never ended: the test fails instead of hanging


async def _sync(engine: AsyncEngine, settings: Settings, *names: str) -> dict[str, StreamOutcome]:
    async with asyncio.timeout(WATCHDOG_SECONDS):
        return await sync(engine, settings, *names)


def _list_requests(sim: Any, path: str) -> int:
    return sum(1 for r in sim.requests if r.path.startswith(path))


async def _state(engine: AsyncEngine, key: str) -> Any:
    return await rows(
        engine, "SELECT watermark, checkpoint FROM pipeline.stream_state WHERE stream = :k", k=key
    )


# ---- 1. implausible totals end on empty pages -----------------------------------------------


def _claiming_a_billion(style: str, answer: Answer) -> Answer:
    """The style's fake API with a claimed total of 10**9 pages on every answer."""

    def lying(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        honest = answer(params, headers)
        body, out = honest.body, dict(honest.headers)
        if style == "afosto counted":
            out["x-count"] = str(BILLION * int(headers["x-page-size"]))
        elif style == "valomnia by offset":
            body = {**body, "paging": {**body["paging"], "total": BILLION * int(params["max"])}}
        else:
            body = {**body, "total_pages": BILLION}
        return response(body, out)

    return lying


@pytest.mark.parametrize("style", ["afosto counted", "soho", "sparkfly", "valomnia by offset"])
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_claimed_billion_pages_ends_on_the_empty_pages_past_the_records(
    style: str, concurrency: int
) -> None:
    """Before: the walk asked for page after page (the fake refused its 501st request)."""
    paginator, api = paginators(5)[style]
    tasks_seen: list[int] = []
    lying = _claiming_a_billion(style, api([{"id": i} for i in range(20)]))  # pages 1..4

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        tasks_seen.append(len(asyncio.all_tasks()))
        return lying(params, headers)

    server = Server(answer)
    pages: list[Page] = []
    before = len(asyncio.all_tasks())
    with capture_logs() as logs, pytest.raises(ListEndedEarly) as ended:
        async for page in paginator.pages(server, start=None, concurrency=concurrency):
            pages.append(page)

    ids = [(r["credential"] if "credential" in r else r)["id"] for p in pages for r in p.records]
    assert sorted(ids) == list(range(20))  # every record read once, before the walk ended
    window = max(2, concurrency)
    # the records' pages, the empty window, and what was in flight or launched meanwhile
    assert len(server.asked) <= 4 + window + 4 * concurrency
    assert server.peak <= 2 * concurrency
    assert max(tasks_seen) - before <= 2 * concurrency + 1  # a window's tasks, not a billion
    assert (ended.value.claimed_pages, ended.value.records_end) == (BILLION, 4)
    [warning] = [e for e in logs if e["event"] == "total_implausible"]
    assert warning["log_level"] == "warning"
    assert (warning["claimed_pages"], warning["records_end_page"]) == (BILLION, 4)


async def test_a_lying_total_loads_every_record_and_settles_nothing(engine: AsyncEngine) -> None:
    """Soho says total_pages = 10**9 on every page. Before: the scan never ended. After: it
    ends past the records, stores every change, marks no absent row deleted and keeps the
    watermark; once the source is honest again the deletion is found."""
    async with serve(SohoSimulator(customers=120, seed=5)) as running:
        sim: Any = running.sim
        settings = make_settings(running)
        assert (await _sync(engine, settings))["soho.customers"].status == "succeeded"
        [before] = await _state(engine, "soho.customers")
        gone = sim.ids[7]
        sim.delete_customer(gone)
        edited = sim.update_customer(sim.ids[50], email="moved@example.com")
        sim.faults.add(
            Rewrite(fields={"total_pages": BILLION}), times=None, path_prefix="/api/v1/customers"
        )
        sim.clear_requests()

        with capture_logs() as logs:
            outcome = (await _sync(engine, settings))["soho.customers"]

        assert outcome.status == "succeeded", outcome.error
        assert _list_requests(sim, "/api/v1/customers") <= 5 + 4 + 2 * 4
        stored = await live_rows(engine, "soho.customers")
        assert stored[edited["id"]] == edited
        assert gone in stored, "a scan that did not read every claimed page deleted a row"
        assert await _state(engine, "soho.customers") == [before]
        [warning] = [e for e in logs if e["event"] == "total_implausible"]
        assert warning["claimed_pages"] == BILLION and warning["records_end_page"] == 5

        sim.faults.clear()
        assert (await _sync(engine, settings))["soho.customers"].status == "succeeded"
        assert gone not in await live_rows(engine, "soho.customers")
        [after] = await _state(engine, "soho.customers")
        assert after.watermark > before.watermark


async def test_lying_counts_of_price_groups_and_prices_delete_no_price(engine: AsyncEngine) -> None:
    """Afosto prices: the group list and every group's price list claim 10**9 pages in
    `x-count`. Every group and price read is stored; a price gone at the source is not
    marked deleted by such scans (it is by two honest ones)."""
    sim = AfostoSimulator(contacts=1, shipments=1, parcels=1, groups=3, prices_per_group=10, seed=6)
    async with serve(sim) as running:
        settings = make_settings(afosto=running)
        assert (await _sync(engine, settings, "prices"))["afosto.prices"].status == "succeeded"
        gone = sim.truth("prices")[4]["id"]
        sim.delete_price(gone)
        sim.faults.add(
            Rewrite(headers={"x-count": str(BILLION * 100)}), times=None, path_prefix="/cat/groups"
        )
        sim.clear_requests()

        for _ in range(2):  # two absences in a row would confirm a deletion
            outcome = (await _sync(engine, settings, "prices"))["afosto.prices"]
            assert outcome.status == "succeeded", outcome.error
        assert _list_requests(sim, "/cat/groups") <= 2 * 4 * (1 + 4 + 2 * 4)
        assert gone in await live_rows(engine, "afosto.prices")
        assert len(await live_rows(engine, "afosto.price_groups")) == 3

        sim.faults.clear()
        for _ in range(2):
            assert (await _sync(engine, settings, "prices"))["afosto.prices"].status == "succeeded"
        assert gone not in await live_rows(engine, "afosto.prices")


# ---- 5. bad paging fields are the source's error, named ----------------------------------------

# (id, simulator, source, stream, list path, the fault, the field the message names)
BAD_FIELDS: list[tuple[str, Callable[[], Any], str, str, str, Rewrite, str]] = [
    *(
        (
            f"soho total_pages {value!r}",
            lambda: SohoSimulator(customers=60, seed=12),
            "soho",
            "customers",
            "/api/v1/customers",
            Rewrite(fields={"total_pages": value}),
            "total_pages",
        )
        for value in ("lots", -5, 2.5, 10**30, "²")
    ),
    *(
        (
            f"soho next_page {value!r}",
            lambda: SohoSimulator(customers=60, seed=12),
            "soho",
            "customers",
            "/api/v1/customers",
            Rewrite(fields={"next_page": value}),
            "next_page",
        )
        for value in ("x", {"page": 2}, True, 7)
    ),
    (
        "soho current_page '²'",
        lambda: SohoSimulator(customers=60, seed=12),
        "soho",
        "customers",
        "/api/v1/customers",
        Rewrite(fields={"current_page": "²"}),
        "current_page",
    ),
    *(
        (
            f"afosto x-count {value!r}",
            lambda: AfostoSimulator(contacts=1, shipments=60, parcels=1, groups=1, seed=12),
            "afosto",
            "shipments",
            "/lcs/shipments",
            Rewrite(headers={"x-count": value}),
            "x-count",
        )
        for value in ("abc", "-5", "²")
    ),
    (
        "afosto x-page 'abc'",
        lambda: AfostoSimulator(contacts=1, shipments=60, parcels=1, groups=1, seed=12),
        "afosto",
        "shipments",
        "/lcs/shipments",
        Rewrite(headers={"x-page": "abc"}),
        "x-page",
    ),
    *(
        (
            f"sparkfly total_pages {value!r}",
            lambda: SparkflySimulator(credentials=120, seed=12),
            "sparkfly",
            "credentials",
            "/v1.0/credentials",
            Rewrite(fields={"total_pages": value}),
            "total_pages",
        )
        for value in ("lots", -1, 10**30, 0)  # 0: page 1 holds records all the same
    ),
    (
        "valomnia paging.total true",
        lambda: ValomniaSimulator(authorities=230, seed=12),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        Rewrite(fields={"paging.total": True}),
        "paging.total",
    ),
    (
        "valomnia paging 'lots'",
        lambda: ValomniaSimulator(authorities=230, seed=12),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        Rewrite(fields={"paging": "lots"}),
        "paging",
    ),
]


@pytest.mark.parametrize(
    ("make", "source", "stream", "path", "fault", "field"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
async def test_a_bad_paging_field_fails_the_stream_naming_the_field(
    engine: AsyncEngine,
    make: Callable[[], Any],
    source: str,
    stream: str,
    path: str,
    fault: Rewrite,
    field: str,
) -> None:
    """Before: most were taken for a missing field (Sparkfly's walk then ended after page 1 and
    called the scan complete; Valomnia's after one page), and a digit int() does not know
    ("²") was an internal error."""
    async with serve(make()) as running:
        running.sim.faults.add(fault, times=None, path_prefix=path)
        streams = {f"{source}.{stream}": {"page_size": 25}}
        settings = make_settings(**{source: running}, streams=streams)  # type: ignore[arg-type]
        outcome = (await _sync(engine, settings, f"{source}.{stream}"))[f"{source}.{stream}"]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith(f"{source}.{stream}: ") and "internal error" not in error
    assert field in error and "does not page as documented" in error
