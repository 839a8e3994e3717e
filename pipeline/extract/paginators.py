"""How a list endpoint is walked. One class per paging style the sources use.

A paginator is declared with its parameter names (data), and `pages()` starts a fresh, single-use
walk: all walking state lives in that generator. It yields `Page`s; for sorted streams each page
carries the checkpoint that is safe to commit once the page is stored.

A page that repeats its predecessor, or a server that ignores the page we asked for, is an error
(`PaginationError`), never an endless loop.
"""

from __future__ import annotations

import asyncio
import itertools
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pipeline.errors import PaginationError
from pipeline.extract.http import JsonResponse
from pipeline.records import dig, parse_timestamp

T = TypeVar("T")
Fetch = Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[JsonResponse]]


@dataclass(frozen=True)
class Page:
    """One page of a list, as the paginator read it: its records, its number and, for sorted
    streams, the checkpoint that is safe once it is stored."""

    records: list[Any]
    number: int
    checkpoint: datetime | None = None
    # The page numbers a batch was merged from (empty: just `number`).
    merged: tuple[int, ...] = ()

    @property
    def numbers(self) -> tuple[int, ...]:
        return self.merged or (self.number,)


def merge(pages: list[Page]) -> Page:
    """Several pages as one batch (one transaction): the records in order, and the latest
    checkpoint, which is safe because pages of sorted streams arrive in cursor order."""
    if len(pages) == 1:
        return pages[0]
    checkpoints = [p.checkpoint for p in pages if p.checkpoint is not None]
    return Page(
        [record for page in pages for record in page.records],
        pages[0].number,
        max(checkpoints) if checkpoints else None,
        tuple(n for page in pages for n in page.numbers),
    )


class Paginator(ABC):
    """Walks one endpoint. `start` is the stream's watermark for sorted streams, else None."""

    records_path: tuple[str, ...] = ()

    @property
    def sees_records(self) -> bool:
        """Whether paging looks inside the records (their cursors, ids). If not, the records
        may come as the bytes the API sent, parsed only when written (`pipeline.extract.rawjson`)."""
        return False

    def check(self, body: Any) -> None:
        """Raise ValueError when a body is not the documented envelope (the client retries)."""
        records_at(body, self.records_path)

    @abstractmethod
    def pages(
        self,
        fetch: Fetch,
        *,
        start: datetime | None,
        concurrency: int,
        end: datetime | None = None,
        skip: AbstractSet[int] = frozenset(),
    ) -> AsyncIterator[Page]:
        """`start`/`end`: the cursor window, for paginators that filter by it (backfills).
        `skip`: page numbers already loaded by an interrupted run, for numbered pages."""


def records_at(body: Any, path: Sequence[str]) -> list[Any]:
    """The record list inside a body; a body without it is malformed, not empty."""
    value = dig(body, path) if path else body
    if not isinstance(value, list):
        where = ".".join(path) or "the body"
        raise ValueError(f"expected a list of records at {where}, got {type(value).__name__}")
    return value


def _records(body: Any, path: Sequence[str]) -> list[Any]:
    """Bodies are checked by the HTTP client (and retried) before they get here; this is the
    paginator's own guard against a shape it cannot walk."""
    try:
        return records_at(body, path)
    except ValueError as exc:
        raise PaginationError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Numbered pages: Soho (?page=&per=, totals in the body) and Afosto (x-page headers, x-count)
# ---------------------------------------------------------------------------------------------


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
    """

    page_size: int
    first_page: int = 1

    @abstractmethod
    def request(self, number: int) -> tuple[dict[str, str], dict[str, str]]:
        """Query parameters and headers asking for page `number`."""

    @abstractmethod
    def read(self, number: int, response: JsonResponse) -> PageRead: ...

    async def _get(self, fetch: Fetch, number: int) -> PageRead:
        params, headers = self.request(number)
        return self.read(number, await fetch(params, headers))

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
            calls = (
                (lambda n=n: self._get(fetch, n))
                for n in range(self.first_page + 1, last_number + 1)
                if n not in skip or n == last_number  # the last one says whether more follow
            )
            async for read in _concurrently(calls, window=2 * concurrency):
                if read.page.number == last_number:
                    last = read
                if read.page.records and read.page.number not in skip:
                    yield read.page
            if not last.more:
                return
        async for page in self._until_last(fetch, last.page.number + 1, concurrency):
            yield page

    async def _until_last(self, fetch: Fetch, number: int, window: int) -> AsyncIterator[Page]:
        """Fetch pages `number`, `number + 1`, ... up to `window` at a time until one is the
        last; pages beyond the last are dropped (records inserted since are the next run's)."""
        in_flight: dict[int, asyncio.Future[PageRead]] = {}
        next_number, last_number = number, None
        try:
            while True:
                while len(in_flight) < window and last_number is None:
                    in_flight[next_number] = asyncio.ensure_future(self._get(fetch, next_number))
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


def _page_count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


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
            current = _page_count(dig(body, self.current_page_path))
            if current is not None and current != number:
                raise PaginationError(
                    f"asked for page {number}, the API answered page {current}; "
                    f"it ignores the '{self.page_param}' parameter"
                )
        records = _records(body, self.records_path)
        total = _page_count(dig(body, self.total_pages_path))
        if self.next_page_path is not None:
            more = dig(body, self.next_page_path) is not None and bool(records)
        else:  # no next-page field (will_paginate): this page's own count of pages decides
            more = bool(records) and total is not None and number < self.first_page + total - 1
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
        records = _records(response.body, self.records_path)
        count = _page_count(dig(response.body, self.total_path))
        offset = (number - self.first_page) * self.page_size
        more = bool(records) and (count is None or offset + len(records) < count)
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
        served = _page_count(response.headers.get(self.page_header))
        if served is not None and served != number:
            raise PaginationError(
                f"asked for page {number}, the API answered page {served}; "
                f"it ignores the '{self.page_header}' header"
            )
        records = _records(response.body, self.records_path)
        total = None
        if number == self.first_page and self.count_header and records:
            count = _page_count(response.headers.get(self.count_header))
            if count is not None:
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


# ---------------------------------------------------------------------------------------------
# Seek by value (Valomnia: lastUpdated_gte + sort=lastUpdated&order=asc, offset/max)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SingleResponse(Paginator):
    """One request answers the whole set (DigiLocker). `records_path` () with `whole_body`:
    the body itself is the one record (a statistics object)."""

    page_size: int = 0
    records_path: tuple[str, ...] = ()
    whole_body: bool = False

    @property
    def sees_records(self) -> bool:
        return self.whole_body  # the body is the record

    def check(self, body: Any) -> None:
        if not self.whole_body:
            records_at(body, self.records_path)
        elif not isinstance(body, dict):
            raise ValueError(f"expected a JSON object, got {type(body).__name__}")

    async def pages(
        self,
        fetch: Fetch,
        *,
        start: datetime | None,
        concurrency: int,
        end: datetime | None = None,
        skip: AbstractSet[int] = frozenset(),
    ) -> AsyncIterator[Page]:
        response = await fetch({}, {})
        records = [response.body] if self.whole_body else _records(response.body, self.records_path)
        if records:
            yield Page(records, 1)


def format_utc_seconds(value: datetime) -> str:
    """YYYY-MM-DDTHH:MM:SSZ, floored to the second (so an inclusive boundary stays inclusive)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ValueSeekPages(Paginator):
    """Pages by the cursor's value instead of a growing offset.

    Each request asks for `cursor >= last value seen`, offset 0. Records that change or vanish
    between requests cannot shift unread records past us, because no offset is carried over.
    The only offset is inside a *tie*: when a whole page shares one cursor value (more records
    in one second than fit on a page), that group is read with `gte=lte=value` and growing
    offsets, and re-read from its start whenever its size changes mid-read. Then the walk goes on
    with `cursor > value`.
    """

    page_size: int
    cursor_field: str
    gte_param: str
    gt_param: str
    lte_param: str
    offset_param: str = "offset"
    size_param: str = "max"
    records_path: tuple[str, ...] = ("data",)
    total_path: tuple[str, ...] = ("paging", "total")
    next_path: tuple[str, ...] = ("paging", "next")
    sort_params: Mapping[str, str] = field(default_factory=dict)
    max_tie_restarts: int = 5

    @property
    def sees_records(self) -> bool:
        return True  # seeks by the last record's cursor

    def _cursor(self, record: Any) -> datetime | None:
        if not isinstance(record, dict):
            return None
        try:
            return parse_timestamp(record.get(self.cursor_field))
        except ValueError:
            return None  # the loader quarantines it; paging goes by the records that parse

    def _params(self, offset: int, **bounds: datetime) -> dict[str, str]:
        params = {
            **self.sort_params,
            self.size_param: str(self.page_size),
            self.offset_param: str(offset),
        }
        for name, value in bounds.items():
            params[name] = format_utc_seconds(value)
        return params

    def _is_last(self, body: Any, offset: int, count: int) -> bool:
        total = dig(body, self.total_path)
        if isinstance(total, int):
            return offset + count >= total
        return dig(body, self.next_path) is None

    async def pages(
        self,
        fetch: Fetch,
        *,
        start: datetime | None,
        concurrency: int,
        end: datetime | None = None,
        skip: AbstractSet[int] = frozenset(),
    ) -> AsyncIterator[Page]:
        upper = {} if end is None else {self.lte_param: end}
        lower = start
        exclusive = False
        number = 0
        previous_ids: tuple[Any, ...] | None = None
        while True:
            bounds = (
                {} if lower is None else {(self.gt_param if exclusive else self.gte_param): lower}
            )
            response = await fetch(self._params(0, **bounds, **upper), {})
            records = _records(response.body, self.records_path)
            if not records:
                return
            ids = tuple(r.get("id") if isinstance(r, dict) else None for r in records)
            if ids == previous_ids:
                raise PaginationError(
                    f"the same page came back twice for {self.gte_param}="
                    f"{format_utc_seconds(lower) if lower else '(none)'}"
                )
            previous_ids = ids
            cursors = [c for c in map(self._cursor, records) if c is not None]
            if any(later < earlier for earlier, later in itertools.pairwise(cursors)):
                raise PaginationError(
                    f"the API did not sort the page by {self.cursor_field}; seeking by value "
                    "would skip records"
                )
            number += 1
            last = max(cursors) if cursors else lower
            yield Page(records, number, checkpoint=last)
            if self._is_last(response.body, 0, len(records)):
                return
            if last is None:
                raise PaginationError("no record on a full page has a readable cursor")
            whole_page_is_one_tie = len(cursors) == len(records) and min(cursors) == last
            if whole_page_is_one_tie:
                async for page in self._read_tie(fetch, last, number):
                    number = page.number
                    yield page
                lower, exclusive = last, True
            else:
                # Re-read the records sharing the last value: the upsert deduplicates them,
                # and inclusive boundaries never skip a record that shares the last second.
                lower, exclusive = last, False

    async def _read_tie(self, fetch: Fetch, value: datetime, number: int) -> AsyncIterator[Page]:
        """Read every record whose cursor equals `value`, surviving the group changing size."""
        for _attempt in range(self.max_tie_restarts + 1):
            offset = 0
            expected_total: int | None = None
            stable = True
            while True:
                response = await fetch(
                    self._params(offset, **{self.gte_param: value, self.lte_param: value}), {}
                )
                records = _records(response.body, self.records_path)
                total = dig(response.body, self.total_path)
                if expected_total is None:
                    expected_total = total if isinstance(total, int) else None
                elif total != expected_total:
                    stable = False
                if records:
                    number += 1
                    yield Page(records, number, checkpoint=value)
                if not records or self._is_last(response.body, offset, len(records)):
                    break
                offset += len(records)
            if stable:
                return
        raise PaginationError(
            f"the group of records sharing {self.cursor_field}={format_utc_seconds(value)} kept "
            f"changing size while being read ({self.max_tie_restarts + 1} attempts)"
        )
