"""Every paginator walked against a tiny fake of the API it was written for.

Each fake answers `JsonResponse`s from a list of records the test holds, in the documented
envelope of its API (SOURCES.md): Afosto's bare array with `x-page`/`x-count` headers, Soho's
Kaminari body, Sparkfly's will_paginate body, Valomnia's `paging` + `data`. A walk is a pure
function of the answers, so a fake at the `fetch` boundary is all a unit test needs; the real
simulators are walked by tests/integration/test_stream_contract.py.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ListEndedEarly, PaginationError
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import (
    HeaderPages,
    OffsetPages,
    Page,
    PageNumberPages,
    Paginator,
    SingleResponse,
    merge,
)
from pipeline.sources.afosto import contacts, shipments
from pipeline.sources.soho import customers
from pipeline.sources.sparkfly import credentials
from pipeline.sources.valomnia import authorities
from tests.unit.paging import Answer, Server, response


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def afosto(
    records: list[Any],
    *,
    count: int | None = None,
    counted: bool = True,
    max_size: int = 10_000,
    echo_page: bool = True,
    ignore_page: bool = False,
) -> Answer:
    """Headers `x-page`/`x-page-size` in; a bare array out, with `x-page` and (where the
    endpoint documents it) `x-count`. `count` is what the header claims, if not the truth."""

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        page = 1 if ignore_page else int(headers["x-page"])
        size = min(int(headers["x-page-size"]), max_size)
        out = {"x-page": str(page)} if echo_page else {}
        if counted:
            out["x-count"] = str(len(records) if count is None else count)
        return response(records[(page - 1) * size : page * size], out)

    return answer


def soho(records: list[Any], *, max_per: int = 25, ignore_page: bool = False) -> Answer:
    """Kaminari: `page`/`per` (clamped to 25), `current_page`, `next_page`, `total_pages`."""

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        page = 1 if ignore_page else max(int(params["page"]), 1)
        per = min(int(params["per"]), max_per)
        total_pages = _ceil(len(records), per)
        beyond = page > total_pages
        body = {
            "current_page": page,
            "limit_value": per,
            "next_page": None if beyond or page == total_pages else page + 1,
            "prev_page": None if beyond or page == 1 else page - 1,
            "total_pages": total_pages,
            "records": records[(page - 1) * per : page * per],
        }
        return response(body)

    return answer


def sparkfly(records: list[Any], *, max_per: int = 100) -> Answer:
    """will_paginate: `page`/`per_page`, `total_pages`, no next page; elements wrapped."""

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        page, per = int(params["page"]), min(int(params["per_page"]), max_per)
        chosen = records[(page - 1) * per : page * per]
        body = {
            "page": page,
            "per_page": per,
            "total_entries": len(records),
            "total_pages": _ceil(len(records), per),
            "credentials": [{"credential": r, "errors": {}} for r in chosen],
        }
        return response(body)

    return answer


def valomnia(records: list[Any], *, max_size: int = 1000) -> Answer:
    """`offset`/`max` (clamped) and `paging.total` / `paging.next` (Valomnia, by id)."""

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        offset, size = int(params["offset"]), min(int(params["max"]), max_size)
        more = offset + size < len(records)
        paging: dict[str, Any] = {"total": len(records), "max": size, "offset": offset}
        paging["previous"] = None if offset == 0 else f"/authorities?offset={max(0, offset - size)}"
        paging["next"] = f"/authorities?offset={offset + size}" if more else None
        return response({"paging": paging, "data": records[offset : offset + size]})

    return answer


def paginators(size: int) -> dict[str, tuple[Paginator, Callable[..., Answer]]]:
    """Each numbered paginator as its stream declares it, with the fake of that stream's API."""
    assert authorities.reconcile_paginator is not None
    return {
        "afosto counted": (shipments.paginator(size), afosto),
        "afosto uncounted": (
            contacts.paginator(size),
            lambda records, **kw: afosto(records, counted=False, **kw),
        ),
        "soho": (customers.paginator(size), soho),
        "sparkfly": (credentials.paginator(size), sparkfly),
        "valomnia by offset": (authorities.reconcile_paginator(size), valomnia),
    }


STYLES = sorted(paginators(1))


def _ids(pages: list[Page]) -> list[Any]:
    """The ids walked, unwrapping Sparkfly's `{"credential": ...}`."""
    return [
        (r["credential"] if "credential" in r else r)["id"] for page in pages for r in page.records
    ]


def _page_asked(params: Mapping[str, str], headers: Mapping[str, str]) -> int:
    if "x-page" in headers:
        return int(headers["x-page"])
    if "offset" in params:
        return int(params["offset"]) // int(params["max"]) + 1
    return int(params["page"])


async def walk(
    paginator: Paginator, server: Server, *, concurrency: int = 2, **kwargs: Any
) -> list[Page]:
    kwargs.setdefault("start", None)
    return [page async for page in paginator.pages(server, concurrency=concurrency, **kwargs)]


def _records(n: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in range(n)]


# ---- numbered pages: every style ------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    style=st.sampled_from(STYLES),
    n=st.integers(0, 90),
    size=st.integers(1, 12),
    concurrency=st.integers(1, 4),
)
async def test_any_numbered_walk_yields_each_record_once(
    style: str, n: int, size: int, concurrency: int
) -> None:
    paginator, api = paginators(size)[style]
    server = Server(api(_records(n)))
    pages = await walk(paginator, server, concurrency=concurrency)
    assert Counter(_ids(pages)) == Counter(range(n))
    assert all(page.records for page in pages)  # empty pages are not yielded
    assert server.peak <= 2 * concurrency


@pytest.mark.parametrize("style", STYLES)
async def test_an_empty_first_page_ends_the_walk_at_once(style: str) -> None:
    paginator, api = paginators(5)[style]
    server = Server(api([]))
    assert await walk(paginator, server) == []
    assert len(server.asked) == 1


@pytest.mark.parametrize("style", STYLES)
async def test_a_short_last_page_is_read(style: str) -> None:
    paginator, api = paginators(5)[style]
    pages = await walk(paginator, Server(api(_records(23))))
    assert sorted(_ids(pages)) == list(range(23))
    assert sorted(len(p.records) for p in pages) == [3, 5, 5, 5, 5]


@pytest.mark.parametrize("style", ["afosto counted", "soho", "sparkfly", "valomnia by offset"])
async def test_pages_come_concurrently_once_the_count_is_known(style: str) -> None:
    paginator, api = paginators(2)[style]
    server = Server(api(_records(40)))
    pages = await walk(paginator, server, concurrency=3)
    assert sorted(_ids(pages)) == list(range(40))
    assert 1 < server.peak <= 6  # a window of twice the client's cap; the client holds the cap


async def test_without_a_count_pages_are_read_ahead_within_the_cap_until_an_empty_one() -> None:
    paginator, api = paginators(2)["afosto uncounted"]
    server = Server(api(_records(40)))
    pages = await walk(paginator, server, concurrency=3)
    assert sorted(_ids(pages)) == list(range(40))
    assert 1 < server.peak <= 3
    assert [int(h["x-page"]) for _, h in server.asked][:21] == list(range(1, 22))


@pytest.mark.parametrize("claimed", [0, 7, 12, 60, 10**6])
async def test_a_wrong_x_count_neither_loses_nor_doubles_records(claimed: int) -> None:
    """x-count is a hint (undocumented: "undefined"); the walk ends on an empty page, or on a
    run of them when the count claims far more (`ListEndedEarly`, raised after its pages)."""
    server = Server(afosto(_records(23), count=claimed))
    pages: list[Page] = []
    with contextlib.suppress(ListEndedEarly):
        async for page in shipments.paginator(5).pages(server, start=None, concurrency=2):
            pages.append(page)
    assert Counter(_ids(pages)) == Counter(range(23))


@pytest.mark.parametrize("style", ["afosto counted", "afosto uncounted", "soho", "sparkfly"])
async def test_a_server_that_clamps_the_page_size_is_walked_in_its_own_size(style: str) -> None:
    """Nothing documents Afosto's or Sparkfly's maximum; Soho clamps `per` to 25 silently."""
    paginator, api = paginators(10)[style]
    clamp = {"max_per": 4} if style in ("soho", "sparkfly") else {"max_size": 4}
    server = Server(api(_records(37), **clamp))
    pages = await walk(paginator, server)
    assert Counter(_ids(pages)) == Counter(range(37))


async def test_a_clamped_size_counts_the_pages_in_the_size_served() -> None:
    """x-count 37 in pages of the 4 served (not the 10 asked): 9 more pages are known at once,
    so they come in the counted window (6), not the look-ahead's (3) after a guessed end."""
    server = Server(afosto(_records(37), max_size=4))
    pages = await walk(shipments.paginator(10), server, concurrency=3)
    assert Counter(_ids(pages)) == Counter(range(37))
    assert server.peak > 3


async def test_a_page_number_server_that_ignores_the_page_asked_for_is_an_error() -> None:
    with pytest.raises(PaginationError, match="ignores the 'page' parameter"):
        await walk(customers.paginator(5), Server(soho(_records(30), ignore_page=True)))


async def test_a_header_server_that_ignores_the_page_asked_for_is_an_error() -> None:
    with pytest.raises(PaginationError, match="ignores the 'x-page' header"):
        await walk(shipments.paginator(5), Server(afosto(_records(30), ignore_page=True)))


@pytest.mark.parametrize("counted", [True, False])
async def test_a_header_server_that_repeats_one_page_without_echoing_it_is_an_error(
    counted: bool,
) -> None:
    """Only GET /rel/contacts documents an `x-page` response header (SOURCES.md §1.2)."""
    server = Server(afosto(_records(30), counted=counted, ignore_page=True, echo_page=False))
    paginator = (shipments if counted else contacts).paginator(5)
    with pytest.raises(PaginationError):
        await walk(paginator, server)


@pytest.mark.parametrize("style", ["afosto counted", "soho", "sparkfly", "valomnia by offset"])
async def test_pages_already_loaded_are_skipped_and_not_fetched(style: str) -> None:
    """A resumed backfill: the first page is read for its count, the last for whether more
    follow; the other loaded pages are neither fetched nor yielded."""
    paginator, api = paginators(5)[style]
    server = Server(api(_records(25)))  # pages 1..5
    pages = await walk(paginator, server, skip=frozenset({1, 2, 4, 5}))
    assert sorted(p.number for p in pages) == [3]
    assert _ids(pages) == list(range(10, 15))
    asked = {_page_asked(params, headers) for params, headers in server.asked}
    assert {1, 3, 5} <= asked and not asked & {2, 4}  # Afosto reads on to an empty page 6


async def test_soho_follows_next_page_past_total_pages_when_the_list_grows() -> None:
    """`total_pages` is read from page 1; a record inserted during the scan adds a page whose
    predecessor then says `next_page`."""
    records = _records(10)

    def growing(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        if params["page"] == "2" and len(records) == 10:
            records.append({"id": 10})
        return soho(records)(params, headers)

    pages = await walk(customers.paginator(5), Server(growing))
    assert sorted(_ids(pages)) == list(range(11))


async def test_sparkfly_ends_at_total_pages_without_a_next_page_field() -> None:
    server = Server(sparkfly(_records(12)))
    pages = await walk(credentials.paginator(5), server)
    assert sorted(_ids(pages)) == list(range(12))
    assert sorted(int(p["page"]) for p, _ in server.asked) == [1, 2, 3]  # nothing past the last


@pytest.mark.parametrize(("n", "pages_asked"), [(0, 1), (1, 1), (20, 4), (21, 5)])
async def test_offset_pages_ask_for_exactly_the_pages_the_total_needs(
    n: int, pages_asked: int
) -> None:
    server = Server(valomnia(_records(n)))
    pages = await walk(OffsetPages(page_size=5), server)
    assert sorted(_ids(pages)) == list(range(n))
    assert sorted(int(p["offset"]) for p, _ in server.asked) == [5 * i for i in range(pages_asked)]


async def test_offset_pages_over_a_server_that_clamps_max_lose_nothing() -> None:
    server = Server(valomnia(_records(30), max_size=4))
    try:
        pages = await walk(OffsetPages(page_size=10), server)
    except PaginationError:
        return  # refusing to walk is as good as walking right: nothing is silently lost
    assert sorted(_ids(pages)) == list(range(30))


# ---- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("paginator", "good", "bad"),
    [
        (HeaderPages(page_size=5), [], {"records": []}),
        (PageNumberPages(page_size=5), {"records": []}, {"records": None}),
        (credentials.paginator(5), {"credentials": []}, {"page": 1}),
        (OffsetPages(page_size=5), {"data": []}, {"data": {"id": 1}}),
        (SingleResponse(records_path=("issuers",)), {"issuers": []}, {"issuers": {}}),
        (SingleResponse(whole_body=True), {"users": "1"}, [{"users": "1"}]),
    ],
)
def test_check_refuses_a_body_of_the_wrong_shape(paginator: Paginator, good: Any, bad: Any) -> None:
    paginator.check(good)
    with pytest.raises(ValueError, match="expected"):
        paginator.check(bad)


async def test_a_body_of_the_wrong_shape_reaching_a_walk_is_a_pagination_error() -> None:
    server = Server(lambda params, headers: response({"current_page": 1, "customers": []}))
    with pytest.raises(PaginationError, match="records"):
        await walk(customers.paginator(5), server)


async def test_a_single_response_is_one_page_of_its_list() -> None:
    body = {"issuers": [{"orgid": "a"}, {"orgid": "b"}]}
    server = Server(lambda params, headers: response(body))
    paginator = SingleResponse(records_path=("issuers",))
    pages = await walk(paginator, server)
    assert [(p.number, p.records) for p in pages] == [(1, body["issuers"])]
    assert len(server.asked) == 1 and not paginator.sees_records


async def test_a_single_response_with_an_empty_list_yields_no_page() -> None:
    server = Server(lambda params, headers: response({"documents": []}))
    assert await walk(SingleResponse(records_path=("documents",)), server) == []


async def test_a_whole_body_single_response_is_one_record() -> None:
    body = {"users": "12", "count_as_on": "31072019"}
    paginator = SingleResponse(whole_body=True)
    pages = await walk(paginator, Server(lambda params, headers: response(body)))
    assert [p.records for p in pages] == [[body]]
    assert paginator.sees_records  # the body is the record: it is parsed, not kept raw


def test_merge_keeps_the_records_in_order_the_latest_checkpoint_and_every_number() -> None:
    early, late = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    one = Page([1, 2], 4, early)
    assert merge([one]) is one
    merged = merge([one, Page([3], 5), Page([4, 5], 6, late)])
    assert (merged.records, merged.number, merged.checkpoint) == ([1, 2, 3, 4, 5], 4, late)
    assert merged.numbers == (4, 5, 6)
    again = merge([merged, Page([6], 9)])
    assert again.numbers == (4, 5, 6, 9) and again.checkpoint == late
    assert merge([Page([1], 1), Page([2], 2)]).checkpoint is None
