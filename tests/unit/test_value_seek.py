"""ValueSeekPages (Valomnia authorities) against a fake of the documented list: filters
`lastUpdated_gte/gt/lte`, `sort`/`order`, `offset`/`max`, and `paging.total`/`paging.next`.

The paginator is the one the authorities stream declares, so these tests walk what a sync
walks. Times have one-second resolution, which is what makes ties common (bulk edits).
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import PaginationError
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import Page, ValueSeekPages
from pipeline.sources.valomnia import authorities
from tests.unit.paging import Answer, Server, response

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
FILTERS: dict[str, Callable[[str, str], bool]] = {
    "lastUpdated_gte": operator.ge,
    "lastUpdated_gt": operator.gt,
    "lastUpdated_lte": operator.le,
}


def at(second: int) -> str:
    return (T0 + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def records_at(*seconds: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"role {i}", "lastUpdated": at(s)} for i, s in enumerate(seconds)]


def seek(size: int) -> ValueSeekPages:
    paginator = authorities.paginator(size)
    assert isinstance(paginator, ValueSeekPages)
    return paginator


def valomnia(
    records: list[dict[str, Any]],
    *,
    honour_filters: bool = True,
    max_size: int = 1000,
    before: Callable[[Mapping[str, str]], None] | None = None,
) -> Answer:
    """Sorted by `sort` (ties by id), filtered on second-precision `YYYY-MM-DDTHH:MM:SSZ`
    strings (which compare as they sort), `max` clamped. `before` may change the records."""

    def answer(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        if before is not None:
            before(params)
        field = params.get("sort", "id")
        chosen = sorted(records, key=lambda r: (r[field], r["id"]))
        if params.get("order", "asc") == "desc":
            chosen.reverse()
        for name, keep in FILTERS.items():
            if honour_filters and name in params:
                chosen = [r for r in chosen if keep(r["lastUpdated"], params[name])]
        offset, size = int(params["offset"]), min(int(params["max"]), max_size)
        more = offset + size < len(chosen)
        paging: dict[str, Any] = {"total": len(chosen), "max": size, "offset": offset}
        paging["previous"] = None if offset == 0 else f"/authorities?offset={max(0, offset - size)}"
        paging["next"] = f"/authorities?offset={offset + size}" if more else None
        return response({"paging": paging, "data": chosen[offset : offset + size]})

    return answer


async def walk(paginator: ValueSeekPages, server: Server, **kwargs: Any) -> list[Page]:
    kwargs.setdefault("start", None)
    return [page async for page in paginator.pages(server, concurrency=4, **kwargs)]


def ids(pages: list[Page]) -> Counter[int]:
    return Counter(r["id"] for page in pages for r in page.records)


def bounds(server: Server) -> list[tuple[str | None, str | None, str | None, str]]:
    """(gte, gt, lte, offset) of every request, in order."""
    return [
        (p.get("lastUpdated_gte"), p.get("lastUpdated_gt"), p.get("lastUpdated_lte"), p["offset"])
        for p, _ in server.asked
    ]


async def test_each_request_seeks_from_the_last_value_seen_at_offset_zero() -> None:
    server = Server(valomnia(records_at(*range(12))))
    pages = await walk(seek(5), server)
    assert bounds(server) == [
        (None, None, None, "0"),
        (at(4), None, None, "0"),
        (at(8), None, None, "0"),
    ]
    assert all(p["sort"] == "lastUpdated" and p["order"] == "asc" for p, _ in server.asked)
    assert set(ids(pages)) == set(range(12))
    assert [p.checkpoint for p in pages] == [T0 + timedelta(seconds=s) for s in (4, 8, 11)]
    assert [p.number for p in pages] == [1, 2, 3]


async def test_a_start_is_sent_inclusive_and_floored_to_the_second() -> None:
    server = Server(valomnia(records_at(*range(10))))
    start = T0 + timedelta(seconds=3, microseconds=900_000)
    pages = await walk(seek(50), server, start=start)
    assert bounds(server) == [(at(3), None, None, "0")]
    assert set(ids(pages)) == set(range(3, 10))


async def test_nothing_to_read_is_one_request_and_no_page() -> None:
    server = Server(valomnia([]))
    assert await walk(seek(5), server) == []
    assert len(server.asked) == 1


async def test_records_sharing_the_last_second_of_a_page_are_read_again() -> None:
    """Inclusive boundaries: a record of second 3 served after the page that ended on second 3
    (it was written in that same second, or it is simply next) is never skipped."""
    server = Server(valomnia(records_at(0, 1, 2, 3, 3, 3, 4, 5)))
    pages = await walk(seek(5), server)
    assert bounds(server)[1] == (at(3), None, None, "0")
    assert ids(pages) == Counter({0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 1, 6: 1, 7: 1})


async def test_a_tie_larger_than_a_page_is_read_by_offset_then_passed() -> None:
    records = records_at(0, 1, 2, *[5] * 10, 7, 8, 9)
    server = Server(valomnia(records))
    pages = await walk(seek(4), server)
    assert set(ids(pages)) == set(range(16))
    assert bounds(server) == [
        (None, None, None, "0"),
        (at(5), None, None, "0"),  # ends on a page that is all second 5
        (at(5), None, at(5), "0"),  # so second 5 alone, by offset
        (at(5), None, at(5), "4"),
        (at(5), None, at(5), "8"),
        (None, at(5), None, "0"),  # then past it
    ]
    tie_pages = [p for p in pages if p.number in (3, 4, 5)]
    assert all(p.checkpoint == T0 + timedelta(seconds=5) for p in tie_pages)


async def test_a_tie_that_changes_size_once_is_read_again_from_its_start() -> None:
    records = records_at(*[5] * 6, 9)
    grown: list[dict[str, Any]] = []

    def insert_into_the_tie(params: Mapping[str, str]) -> None:
        if params.get("lastUpdated_lte") == at(5) and params["offset"] == "3" and not grown:
            grown.append({"id": 100, "name": "bulk import", "lastUpdated": at(5)})
            records.extend(grown)

    server = Server(valomnia(records, before=insert_into_the_tie))
    pages = await walk(seek(3), server)
    assert set(ids(pages)) == {0, 1, 2, 3, 4, 5, 6, 100}
    tie_offsets = [offset for _, _, lte, offset in bounds(server) if lte == at(5)]
    assert tie_offsets == ["0", "3", "6", "0", "3", "6"]  # read again once, then stable


async def test_a_tie_that_keeps_changing_size_is_an_error_after_its_restarts() -> None:
    records = records_at(*[5] * 6, 9)
    new_ids = itertools.count(100)

    def insert_into_the_tie(params: Mapping[str, str]) -> None:
        if params.get("lastUpdated_lte") == at(5):
            records.append({"id": next(new_ids), "name": "import", "lastUpdated": at(5)})

    paginator = seek(3)
    server = Server(valomnia(records, before=insert_into_the_tie))
    with pytest.raises(PaginationError, match="kept changing size"):
        await walk(paginator, server)
    restarts = [b for b in bounds(server) if b[2] == at(5) and b[3] == "0"]
    assert len(restarts) == paginator.max_tie_restarts + 1


async def test_a_page_not_sorted_by_the_cursor_is_an_error() -> None:
    """A server that ignores `sort` (here: serves by id) would make seeking skip records."""
    records = records_at(3, 1, 2, 0, 4)

    def by_id(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        return valomnia(records)({**params, "sort": "id"}, headers)

    with pytest.raises(PaginationError, match="did not sort"):
        await walk(seek(5), Server(by_id))


async def test_the_same_page_twice_is_an_error_not_an_endless_loop() -> None:
    """A server that ignores the time filter answers the first page again and again."""
    server = Server(valomnia(records_at(*range(10)), honour_filters=False))
    with pytest.raises(PaginationError, match="same page came back twice"):
        await walk(seek(4), server)
    assert len(server.asked) == 2


async def test_a_full_page_without_a_readable_cursor_is_an_error() -> None:
    records = [{"id": i, "name": f"role {i}", "lastUpdated": "yesterday"} for i in range(8)]
    with pytest.raises(PaginationError, match="readable cursor"):
        await walk(seek(4), Server(valomnia(records)))


async def test_end_bounds_every_request_with_lte() -> None:
    server = Server(valomnia(records_at(*range(20))))
    pages = await walk(seek(4), server, end=T0 + timedelta(seconds=9))
    assert set(ids(pages)) == set(range(10))
    assert all(lte == at(9) for _, _, lte, _ in bounds(server))


async def test_a_server_that_clamps_max_is_still_read_in_full() -> None:
    """Offsets inside a tie count the records served, not the size asked for."""
    server = Server(valomnia(records_at(0, *[4] * 9, 6, 7), max_size=3))
    pages = await walk(seek(10), server)
    assert set(ids(pages)) == set(range(12))


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.lists(st.integers(0, 12), max_size=40).map(sorted),
    size=st.integers(1, 7),
    start=st.none() | st.integers(0, 12),
)
async def test_any_sorted_list_with_ties_is_read_whole_in_cursor_order(
    seconds: list[int], size: int, start: int | None
) -> None:
    records = records_at(*seconds)
    start_at = None if start is None else T0 + timedelta(seconds=start)
    pages = await walk(seek(size), Server(valomnia(records)), start=start_at)
    wanted = {r["id"] for r in records if start is None or r["lastUpdated"] >= at(start)}
    assert set(ids(pages)) == wanted  # every record at least once, none outside the window
    checkpoints = [p.checkpoint for p in pages]
    assert all(
        a is not None and b is not None and a <= b for a, b in itertools.pairwise(checkpoints)
    )
    for page in pages:  # a checkpoint is safe: nothing on its page is later
        assert page.checkpoint == max(T0 + timedelta(seconds=s) for s in _seconds(page))


def _seconds(page: Page) -> list[int]:
    return [
        int((datetime.fromisoformat(r["lastUpdated"]) - T0).total_seconds()) for r in page.records
    ]
