"""Red-team finding "unbounded page walks": a source that claims `total_pages = 10**9` (records
on page 1 only) had every page asked for (80,000 requests in 45 s); a list whose `next_page`
never ends never ended; paging fields that are not what the API documents were guessed at.

- A counted walk ends on a run of empty pages past its records, loads what it read, and is
  not complete: it settles no absence and leaves the watermark (`pipeline.run.strategies.scan`).
- `max_pages` and `max_run_seconds` per stream fail a run that goes past them, naming the
  limit and its settings table; every paginator is held to `max_pages`.
- A bad paging field fails the stream, naming the field, never as an internal error.

Lying sources are the simulators with a `Rewrite` fault (a field or header replaced) or a hook
that adds records on every request (a list that really never ends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from pipeline.config import Settings
from pipeline.errors import ListEndedEarly
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import Page
from pipeline.run import Runner, StreamOutcome
from pipeline.run.stream_run import Mode
from pipeline.sandbox import (
    AfostoSimulator,
    DigiLockerSimulator,
    Rewrite,
    RunningSimulator,
    SohoSimulator,
    SparkflySimulator,
    Stall,
    ValomniaSimulator,
    serve,
)
from pipeline.sandbox.digilocker import BASE_PATH as DIGILOCKER_ROOT
from pipeline.settings import StreamSettings
from pipeline.targets import select_streams
from tests.helpers import live_rows, make_settings, rows, scalar, sync
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


async def _last_run(engine: AsyncEngine, key: str) -> Any:
    [row] = await rows(
        engine,
        "SELECT status, error FROM pipeline.sync_runs WHERE stream = :k ORDER BY id DESC LIMIT 1",
        k=key,
    )
    return row


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


# ---- 2 and 4. endless lists fail at max_pages, whatever the paginator -------------------------


def _soho(sim: Any) -> None:
    for _ in range(10):
        sim.insert_customer()


def _afosto_contacts(sim: Any) -> None:
    for _ in range(10):
        sim.insert_contact()


def _afosto_groups(sim: Any) -> None:
    for _ in range(10):
        sim.insert_group()


def _sparkfly(sim: Any) -> None:
    for _ in range(10):
        sim.insert()


_AUTHORITIES = iter(range(10**6))


def _valomnia_later(sim: Any) -> None:
    """Ever-new records, each request's a second later: the seek never runs out."""
    at = sim.clock() + timedelta(seconds=next(_AUTHORITIES))
    for _ in range(10):
        sim.insert(name=f"endless-{next(_AUTHORITIES)}", at=at)


_TIE = datetime(2030, 1, 1, tzinfo=UTC)


def _valomnia_one_second(sim: Any) -> None:
    """Ever-new records all in one second: a tie the seek reads by offset, never ending."""
    for _ in range(10):
        sim.insert(name=f"endless-{next(_AUTHORITIES)}", at=_TIE)


def _digilocker(sim: Any) -> None:
    pass  # 30 issuers: one doctypes request each, more than max_pages allows


# (id, simulator, source, stream, list path, grow on every list request, mode)
ENDLESS: list[tuple[str, Callable[[], Any], str, str, str, Callable[[Any], None], str]] = [
    (
        "soho next_page",
        lambda: SohoSimulator(customers=30, seed=7),
        "soho",
        "customers",
        "/api/v1/customers",
        _soho,
        "sync",
    ),
    (
        "afosto x-page, no x-count",
        lambda: AfostoSimulator(contacts=30, shipments=1, parcels=1, groups=1, seed=7),
        "afosto",
        "contacts",
        "/rel/contacts",
        _afosto_contacts,
        "sync",
    ),
    (
        "afosto price groups (parent list)",
        lambda: AfostoSimulator(contacts=1, shipments=1, parcels=1, groups=30, seed=7),
        "afosto",
        "prices",
        "/cat/groups",
        _afosto_groups,
        "sync",
    ),
    (
        "sparkfly total_pages",
        lambda: SparkflySimulator(credentials=30, seed=7),
        "sparkfly",
        "credentials",
        "/v1.0/credentials",
        _sparkfly,
        "sync",
    ),
    (
        "valomnia seek, ever-new records",
        lambda: ValomniaSimulator(authorities=30, seed=7),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        _valomnia_later,
        "sync",
    ),
    (
        "valomnia seek, a tie that never ends",
        lambda: ValomniaSimulator(authorities=3, seed=7),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        _valomnia_one_second,
        "sync",
    ),
    (
        "valomnia offset (reconcile)",
        lambda: ValomniaSimulator(authorities=30, seed=7),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        _valomnia_later,
        "reconcile",
    ),
    (
        "digilocker doctypes per issuer",
        lambda: DigiLockerSimulator(issuers=30, seed=7),
        "digilocker",
        "doctypes",
        f"{DIGILOCKER_ROOT}/oauth2/1/pull/",
        _digilocker,
        "sync",
    ),
]

MAX_PAGES = 6


@pytest.fixture(params=ENDLESS, ids=[case[0] for case in ENDLESS])
async def endless(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, ...]]:
    _, make, source, stream, path, grow, mode = request.param
    sim = make()

    def on_list_request(sim: Any, logged: Any) -> None:
        if logged.path.startswith(path):
            grow(sim)

    sim.on_request(on_list_request)
    async with serve(sim) as running:
        yield running, source, stream, path, mode


async def test_an_endless_list_fails_its_stream_at_max_pages_and_the_others_go_on(
    engine: AsyncEngine, endless: tuple[Any, ...]
) -> None:
    """Before: `max_pages` was no setting (the file was refused); without it the walk ran
    until the watchdog. After: the stream fails after `max_pages` list requests, naming the
    limit and its table; a stream of another source in the same run succeeds."""
    running, source, stream, path, mode = endless
    page_size = {} if source == "digilocker" else {"page_size": 10}
    async with serve(SohoSimulator(customers=30, seed=8)) as other:
        sims: dict[str, RunningSimulator] = {source: running}
        streams = {f"{source}.{stream}": {"max_pages": MAX_PAGES, **page_size}}
        if source != "soho":
            sims["soho"] = other
        settings = make_settings(**sims, streams=streams)  # type: ignore[arg-type]
        names = [f"{source}.{stream}"] + (["soho.customers"] if source != "soho" else [])
        runner = Runner(engine, mode=Mode(kind=mode))
        running.sim.clear_requests()
        async with asyncio.timeout(WATCHDOG_SECONDS):
            outcomes = {o.key: o for o in await runner.run(select_streams(settings, names))}

    key = f"{source}.{stream}"
    outcome = outcomes[key]
    assert outcome.status == "failed"
    assert outcome.error == (
        f"{key}: read {MAX_PAGES:,} pages, the stream's max_pages, and its list had not ended; "
        "the source may be paging endlessly (check it), or raise max_pages in "
        f"[sources.{source}.streams.{stream}]"
    )
    list_requests = _list_requests(running.sim, path)
    assert list_requests == MAX_PAGES, "the page over the limit must not be sent"
    assert (await _last_run(engine, key)) == ("failed", outcome.error)
    assert outcome.deleted == 0
    if not (source == "valomnia" and mode == "sync"):  # only a sorted read commits as it goes
        assert all(state.watermark is None for state in await _state(engine, key))
    if source != "soho":
        assert outcomes["soho.customers"].status == "succeeded"


async def test_the_pages_a_partitioned_run_committed_stand_when_it_hits_max_pages(
    engine: AsyncEngine,
) -> None:
    """DigiLocker doctypes, one request per issuer: the issuers done before the limit are in
    the checkpoint, so the next run resumes after them (and, with room, finishes)."""
    async with serve(DigiLockerSimulator(issuers=12, seed=9)) as running:
        streams = {"digilocker.doctypes": {"max_pages": 5}}
        settings = make_settings(digilocker=running, streams=streams)
        first = (await _sync(engine, settings, "doctypes"))["digilocker.doctypes"]
        [state] = await _state(engine, "digilocker.doctypes")
        assert first.status == "failed" and "max_pages" in (first.error or "")
        assert len(state.checkpoint["done_partitions"]) == 4  # 1 issuers list + 4 of 12

        roomy = make_settings(digilocker=running, streams={"digilocker.doctypes": {}})
        second = (await _sync(engine, roomy, "doctypes"))["digilocker.doctypes"]
        assert second.status == "succeeded", second.error
        stored = await scalar(
            engine, "SELECT count(*) FROM digilocker.doctypes WHERE _deleted_at IS NULL"
        )
        assert stored == len(running.sim.truth("doctypes"))


# ---- 3. the guards: settings, time --------------------------------------------------------


def test_the_guards_default_to_limits_no_real_run_reaches_and_are_ranged() -> None:
    """Before: neither key existed (`extra="forbid"` refused them)."""
    defaults = StreamSettings()
    assert (defaults.max_pages, defaults.max_run_seconds) == (1_000_000, 86_400.0)
    assert StreamSettings(max_pages=5, max_run_seconds=0.5).max_run_seconds == 0.5
    for bad in (
        {"max_pages": 0},
        {"max_pages": 2.5},
        {"max_run_seconds": 0},
        {"max_run_seconds": float("inf")},
    ):
        with pytest.raises(ValueError, match=r"max_pages|max_run_seconds") as refused:
            StreamSettings(**bad)
        assert "Extra inputs" not in str(refused.value)


async def test_max_run_seconds_stops_a_run_stuck_on_one_request(engine: AsyncEngine) -> None:
    """Page 2 stalls for 3 s, within the client's 10 s timeout; `max_run_seconds` 0.5 ends the
    run at once. Before: the key was refused. After: `failed` in `sync_runs` with the limit
    named, the rows committed before stand, and nothing is settled."""
    async with serve(SohoSimulator(customers=120, seed=10)) as running:
        sim: Any = running.sim
        quick = make_settings(running, soho_extra={"timeout_seconds": 10})
        assert (await _sync(engine, quick))["soho.customers"].status == "succeeded"
        [before] = await _state(engine, "soho.customers")
        gone = sim.ids[90]
        sim.delete_customer(gone)
        sim.faults.add(Stall(3), times=1, after=1, path_prefix="/api/v1/customers")
        bounded = make_settings(
            running,
            soho_extra={"timeout_seconds": 10, "max_concurrency": 1},
            streams={"soho.customers": {"max_run_seconds": 0.5}},
        )

        started = time.monotonic()
        outcome = (await _sync(engine, bounded))["soho.customers"]
        taken = time.monotonic() - started

    key = "soho.customers"
    assert outcome.status == "failed"
    assert outcome.error == (
        f"{key}: ran for 0.5 s, the stream's max_run_seconds, and was stopped (what it had "
        "committed stands); the source may be paging endlessly or hanging (check it), or "
        "raise max_run_seconds in [sources.soho.streams.customers]"
    )
    assert outcome.seconds < 2.5, "the run waited for the stalled request"
    assert taken < 6
    assert (await _last_run(engine, key)) == ("failed", outcome.error)
    assert await _state(engine, key) == [before]
    assert gone in await live_rows(engine, "soho.customers")


async def test_max_run_seconds_rolls_back_the_write_it_interrupts(engine: AsyncEngine) -> None:
    """The run's write waits on a lock another session holds; the time limit cancels it: the
    transaction rolls back (no row of it, no count in `sync_runs`), and the run is still
    recorded `failed` on the same connection."""
    async with serve(SohoSimulator(customers=60, seed=11)) as running:
        sim: Any = running.sim
        settings = make_settings(running)
        assert (await _sync(engine, settings))["soho.customers"].status == "succeeded"
        edited = sim.update_customer(sim.ids[3], email="locked-out@example.com")
        bounded = make_settings(running, streams={"soho.customers": {"max_run_seconds": 1}})

        async with engine.connect() as blocker:
            transaction = await blocker.begin()
            await blocker.exec_driver_sql("LOCK TABLE soho.customers IN EXCLUSIVE MODE")
            outcome = (await _sync(engine, bounded))["soho.customers"]
            await transaction.rollback()

        assert outcome.status == "failed" and "max_run_seconds" in (outcome.error or "")
        [run] = await rows(
            engine,
            "SELECT status, updated, error FROM pipeline.sync_runs "
            "WHERE stream = 'soho.customers' ORDER BY id DESC LIMIT 1",
        )
        assert (run.status, run.updated) == ("failed", 0)
        assert (await live_rows(engine, "soho.customers"))[edited["id"]] != edited

        assert (await _sync(engine, settings))["soho.customers"].status == "succeeded"
        assert (await live_rows(engine, "soho.customers"))[edited["id"]] == edited


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
