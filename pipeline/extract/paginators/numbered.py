"""Numbered pages: Soho (`?page=&per=`, totals in the body), Sparkfly (`page`/`per_page`,
`total_pages`), Valomnia read in full (`offset`/`max`) and Afosto (`x-page` headers, `x-count`).
When the first page tells the page count the rest are fetched concurrently."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from pipeline.errors import ListEndedEarly, PaginationError
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import fields
from pipeline.extract.paginators.base import Fetch, Page, Paginator, page_records
from pipeline.extract.rawjson import RAW_TYPES
from pipeline.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(frozen=True)
class PageRead:
    """What one numbered page says: its records, the page count if the API tells it (first
    page only), and whether a later page may still hold records."""

    page: Page
    total_pages: int | None
    more: bool


class NumberedPages(Paginator):
    """The walk shared by page-numbered APIs; subclasses say how to ask and how to read.

    When the first page tells how many pages there are, the rest are fetched concurrently.
    Otherwise (or after that count, since records inserted during the scan can push the end
    further) pages are fetched ahead in a window of `concurrency` until one says it is the last.
    Pages come back in completion order; a full scan does not depend on order.

    A count is not trusted blindly: once `concurrency` (at least 2) pages in a row came back
    empty past the last one that held records, the pages the count still claims are not asked
    for, and the walk ends with `ListEndedEarly` (see `_RecordsEnd`).
    """

    page_size: int
    first_page: int = 1

    @abstractmethod
    def request(self, number: int) -> tuple[dict[str, str], dict[str, str]]:
        """Query parameters and headers asking for page `number`."""

    @abstractmethod
    def read(self, number: int, response: JsonResponse) -> PageRead: ...

    async def _get(self, fetch: Fetch, number: int, first: list[Any] | None = None) -> PageRead:
        """Page `number`; a page that repeats the `first` one means the server ignores the
        page asked for (without saying which it served): an error, not an endless walk."""
        params, headers = self.request(number)
        read = self.read(number, await fetch(params, headers))
        if first and number != self.first_page and _same_records(read.page.records, first):
            raise PaginationError(
                f"page {number} repeats page {self.first_page}; the API ignores the page asked "
                "for, so the list cannot be walked"
            )
        return read

    async def pages(
        self,
        fetch: Fetch,
        *,
        start: datetime | None,
        concurrency: int,
        end: datetime | None = None,
        skip: AbstractSet[int] = frozenset(),
    ) -> AsyncIterator[Page]:
        first = await self._get(fetch, self.first_page)
        if first.page.records and self.first_page not in skip:
            yield first.page
        if not first.more:
            return
        last = first
        total = first.total_pages
        if total is not None and total > self.first_page:
            last_number = self.first_page + total - 1
            ends = _RecordsEnd(max(2, concurrency), self.first_page)
            unasked: list[int] = []

            def calls() -> Iterator[Callable[[], Awaitable[PageRead]]]:
                for n in range(self.first_page + 1, last_number + 1):
                    if ends.found:
                        unasked.append(n)
                        return
                    if n not in skip or n == last_number:  # the last says whether more follow
                        yield partial(self._get, fetch, n, first.page.records)

            async for read in _concurrently(calls(), window=2 * concurrency):
                ends.saw(read.page.number, bool(read.page.records))
                if read.page.number == last_number:
                    last = read
                if read.page.records and read.page.number not in skip:
                    yield read.page
            if unasked:
                log.warning(
                    "total_implausible",
                    claimed_pages=total,
                    records_end_page=ends.last_with_records,
                    empty_pages=ends.window,
                    first_unasked_page=unasked[0],
                )
                raise ListEndedEarly(total, ends.last_with_records, ends.window)
            if not last.more:
                return
        async for page in self._until_last(
            fetch, last.page.number + 1, concurrency, first.page.records
        ):
            yield page

    async def _until_last(
        self, fetch: Fetch, number: int, window: int, first: list[Any]
    ) -> AsyncIterator[Page]:
        """Fetch pages `number`, `number + 1`, ... up to `window` at a time until one is the
        last; pages beyond the last are dropped (records inserted since are the next run's)."""
        in_flight: dict[int, asyncio.Future[PageRead]] = {}
        next_number, last_number = number, None
        try:
            while True:
                while len(in_flight) < window and last_number is None:
                    in_flight[next_number] = asyncio.ensure_future(
                        self._get(fetch, next_number, first)
                    )
                    next_number += 1
                if not in_flight:
                    return
                done, _ = await asyncio.wait(
                    in_flight.values(), return_when=asyncio.FIRST_COMPLETED
                )
                for read in sorted((task.result() for task in done), key=lambda r: r.page.number):
                    in_flight.pop(read.page.number, None)
                    if last_number is not None and read.page.number > last_number:
                        continue
                    if read.page.records:
                        yield read.page
                    if not read.more:
                        last_number = read.page.number
                if last_number is not None:
                    for later in [n for n in in_flight if n > last_number]:
                        in_flight.pop(later).cancel()
        finally:
            for task in in_flight.values():
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight.values(), return_exceptions=True)


class _RecordsEnd:
    """Where the records of a counted walk end. A run of `window` empty pages past the last
    page that held records says the count is not the list's (a total of 10**9 with records on
    page 1; pages emptied by deletions mid-scan): asking for the rest would be 10**9 requests
    for nothing. Pages answer out of order; with at most a window's worth of requests in
    flight, the empty pages remembered stay a few windows' worth."""

    def __init__(self, window: int, last_with_records: int) -> None:
        self.window = window
        self.last_with_records = last_with_records
        self.found = False
        self._empty: set[int] = set()

    def saw(self, number: int, has_records: bool) -> None:
        if has_records:
            if number > self.last_with_records:
                self.last_with_records = number
                self._empty = {n for n in self._empty if n > number}
            return
        if number < self.last_with_records:
            return
        self._empty.add(number)
        low = high = number
        while low - 1 in self._empty:
            low -= 1
        while high + 1 in self._empty:
            high += 1
        self.found = self.found or high - low + 1 >= self.window


@dataclass(frozen=True)
class PageNumberPages(NumberedPages):
    """`?page=N&per=S` with a body envelope telling the page count and the next page
    (Rails/Kaminari style: `total_pages`, `next_page`, `current_page`)."""

    page_size: int
    page_param: str = "page"
    size_param: str = "per"
    records_path: tuple[str, ...] = ("records",)
    total_pages_path: tuple[str, ...] = ("total_pages",)
    next_page_path: tuple[str, ...] | None = ("next_page",)
    current_page_path: tuple[str, ...] | None = ("current_page",)
    first_page: int = 1
    extra_params: Mapping[str, str] = field(default_factory=dict)

    def request(self, number: int) -> tuple[dict[str, str], dict[str, str]]:
        params = {
            **self.extra_params,
            self.page_param: str(number),
            self.size_param: str(self.page_size),
        }
        return params, {}

    def read(self, number: int, response: JsonResponse) -> PageRead:
        body = response.body
        if self.current_page_path is not None:
            current = fields.count_at(body, self.current_page_path, number)
            if current is not None and current != number:
                raise PaginationError(
                    f"asked for page {number}, the API answered page {current}; "
                    f"it ignores the '{self.page_param}' parameter"
                )
        records = page_records(body, self.records_path)
        total = fields.count_at(body, self.total_pages_path, number)
        pages_to_here = number - self.first_page + 1
        if records and total is not None and total < pages_to_here:
            name = ".".join(self.total_pages_path)
            raise PaginationError(
                f"page {number} holds {len(records)} records, but its {name} says {total}; "
                + fields.NOT_AS_DOCUMENTED
            )
        if self.next_page_path is not None:
            more = fields.next_page_at(body, self.next_page_path, number) and bool(records)
        else:  # no next-page field (will_paginate): this page's own count of pages decides;
            # without one, an empty page ends the walk
            more = bool(records) and (total is None or pages_to_here < total)
        return PageRead(Page(records, number), total if number == self.first_page else None, more)


@dataclass(frozen=True)
class OffsetPages(NumberedPages):
    """`?offset=&max=` with the total record count in the body (Valomnia, read in full by id
    for a reconcile). Page N asks for offset (N - 1) * size."""

    page_size: int
    offset_param: str = "offset"
    size_param: str = "max"
    records_path: tuple[str, ...] = ("data",)
    total_path: tuple[str, ...] = ("paging", "total")
    sort_params: Mapping[str, str] = field(default_factory=dict)
    first_page: int = 1

    def request(self, number: int) -> tuple[dict[str, str], dict[str, str]]:
        offset = (number - self.first_page) * self.page_size
        params = {
            **self.sort_params,
            self.offset_param: str(offset),
            self.size_param: str(self.page_size),
        }
        return params, {}

    def read(self, number: int, response: JsonResponse) -> PageRead:
        records = page_records(response.body, self.records_path)
        count = fields.count_at(response.body, self.total_path, number)
        offset = (number - self.first_page) * self.page_size
        more = bool(records) and (count is None or offset + len(records) < count)
        if more and len(records) < self.page_size:
            # Offsets come from the size asked for: a server that serves fewer (an
            # undocumented maximum) would leave the records in between unread.
            raise PaginationError(
                f"asked for {self.page_size} records at offset {offset}, the API served "
                f"{len(records)} of {count}; lower this stream's page_size to at most "
                f"{len(records)}"
            )
        total = None
        if number == self.first_page and count is not None:
            total = max(1, -(-count // self.page_size))
        return PageRead(Page(records, number), total, more)


@dataclass(frozen=True)
class HeaderPages(NumberedPages):
    """Page number and size in request headers, a bare array body, the record count (maybe) in
    a response header (Afosto: `x-page`, `x-page-size`, `x-count`).

    The last page is the first empty one: a short page is not trusted, since an undocumented
    server maximum may clamp the size. When a count is given, the page count is computed from
    the size the first page actually returned.
    """

    page_size: int
    page_header: str = "x-page"
    size_header: str = "x-page-size"
    count_header: str | None = "x-count"
    records_path: tuple[str, ...] = ()
    first_page: int = 1

    def request(self, number: int) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {self.page_header: str(number), self.size_header: str(self.page_size)}

    def read(self, number: int, response: JsonResponse) -> PageRead:
        served = fields.count(
            response.headers.get(self.page_header), f"the {self.page_header} header", number
        )
        if served is not None and served != number:
            raise PaginationError(
                f"asked for page {number}, the API answered page {served}; "
                f"it ignores the '{self.page_header}' header"
            )
        records = page_records(response.body, self.records_path)
        total = None
        if number == self.first_page and self.count_header:
            header = response.headers.get(self.count_header)
            count = fields.count(header, f"the {self.count_header} header", number)
            if count is not None and records:
                # A server that clamps the size serves fewer than asked on a page that is not
                # the last: the size it served is the real one.
                size = len(records) if len(records) < min(self.page_size, count) else self.page_size
                total = max(1, -(-count // size))
        return PageRead(Page(records, number), total, bool(records))


async def _concurrently(
    calls: Iterator[Callable[[], Awaitable[T]]], window: int
) -> AsyncIterator[T]:
    """Run the calls with at most `window` in flight (the HTTP client caps the real concurrency)
    and yield results as they complete. New calls start only when the consumer asks for more,
    so a slow consumer holds back the producer and memory stays bounded."""
    in_flight: set[asyncio.Future[T]] = set()
    unread: list[asyncio.Future[T]] = []
    try:
        for call in calls:
            in_flight.add(asyncio.ensure_future(call()))
            if len(in_flight) >= window:
                break
        while in_flight:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for _ in done:
                for call in calls:
                    in_flight.add(asyncio.ensure_future(call()))
                    break
            unread = list(done)
            while unread:
                yield unread.pop().result()
    finally:
        for task in in_flight:
            task.cancel()
        # Retrieve every outcome, so one failure is reported once, not once per page.
        await asyncio.gather(*in_flight, *unread, return_exceptions=True)


def _same_records(a: list[Any], b: list[Any]) -> bool:
    """Whether two pages hold the same records (raw ones compared by their bytes)."""
    if len(a) != len(b):
        return False
    as_bytes = [bytes(r) if type(r) in RAW_TYPES else r for r in (a[0], b[0])] if a else []
    if as_bytes and as_bytes[0] != as_bytes[1]:
        return False  # the common case: decided by the first record
    return all(
        (bytes(x) if type(x) in RAW_TYPES else x) == (bytes(y) if type(y) in RAW_TYPES else y)
        for x, y in zip(a, b, strict=True)
    )
