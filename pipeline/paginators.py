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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pipeline.errors import PaginationError
from pipeline.http import JsonResponse
from pipeline.streams import dig, parse_timestamp

T = TypeVar("T")
Fetch = Callable[[Mapping[str, str]], Awaitable[JsonResponse]]


@dataclass
class Page:
    records: list[Any]
    number: int
    checkpoint: datetime | None = None


class Paginator(ABC):
    """Walks one endpoint. `start` is the stream's watermark for sorted streams, else None."""

    @abstractmethod
    def pages(
        self, fetch: Fetch, *, start: datetime | None, concurrency: int
    ) -> AsyncIterator[Page]: ...


def records_at(body: Any, path: Sequence[str]) -> list[Any]:
    """The record list inside a body; a body without it is malformed, not empty."""
    value = dig(body, path) if path else body
    if not isinstance(value, list):
        where = ".".join(path) or "the body"
        raise ValueError(f"expected a list of records at {where}, got {type(value).__name__}")
    return value


class MalformedPage(Exception):
    """The body parsed as JSON but is not the documented envelope."""


def _records(body: Any, path: Sequence[str]) -> list[Any]:
    try:
        return records_at(body, path)
    except ValueError as exc:
        raise MalformedPage(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# Page numbers with a known total (Soho / Kaminari: page, per, total_pages, next_page)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageNumberPages(Paginator):
    """`?page=N&per=S`, the total page count in the body: pages after the first are concurrent.

    After the pages counted on page 1, the walk goes on while the last page says there is a next
    one, so records inserted during the scan are not cut off. Pages come back in completion
    order; a full-scan stream does not care about order.
    """

    page_size: int
    page_param: str = "page"
    size_param: str = "per"
    records_path: tuple[str, ...] = ("records",)
    total_pages_path: tuple[str, ...] = ("total_pages",)
    next_page_path: tuple[str, ...] = ("next_page",)
    current_page_path: tuple[str, ...] | None = ("current_page",)
    first_page: int = 1
    extra_params: Mapping[str, str] = field(default_factory=dict)

    def _params(self, number: int) -> dict[str, str]:
        return {
            **self.extra_params,
            self.page_param: str(number),
            self.size_param: str(self.page_size),
        }

    async def _fetch(self, fetch: Fetch, number: int) -> tuple[Page, Any]:
        response = await fetch(self._params(number))
        body = response.body
        if self.current_page_path is not None:
            current = dig(body, self.current_page_path)
            if current is not None and int(current) != number:
                raise PaginationError(
                    f"asked for page {number}, the API answered page {current}; "
                    f"it ignores the '{self.page_param}' parameter"
                )
        return Page(_records(body, self.records_path), number), body

    async def pages(
        self, fetch: Fetch, *, start: datetime | None, concurrency: int
    ) -> AsyncIterator[Page]:
        first, body = await self._fetch(fetch, self.first_page)
        yield first
        total = dig(body, self.total_pages_path)
        last_known = int(total) if isinstance(total, int | str) and str(total).isdigit() else None
        if last_known is None:
            # No total: walk sequentially until the API says there is no next page.
            number, last_body = self.first_page, body
            while dig(last_body, self.next_page_path) is not None and first.records:
                number += 1
                page, last_body = await self._fetch(fetch, number)
                if not page.records:
                    return
                yield page
            return
        last_body = body
        calls = (
            (lambda n=n: self._fetch(fetch, n)) for n in range(self.first_page + 1, last_known + 1)
        )
        async for page, page_body in _concurrently(calls, window=2 * concurrency):
            if page.number == last_known:
                last_body = page_body
            yield page
        # Records inserted during the scan can push the end beyond the first count.
        number = max(last_known, self.first_page)
        while dig(last_body, self.next_page_path) is not None:
            number += 1
            page, last_body = await self._fetch(fetch, number)
            if not page.records:
                return
            yield page


async def _concurrently(
    calls: Iterator[Callable[[], Awaitable[T]]], window: int
) -> AsyncIterator[T]:
    """Run the calls with at most `window` in flight (the HTTP client caps the real concurrency)
    and yield results as they complete. New calls start only when the consumer asks for more,
    so a slow consumer holds back the producer and memory stays bounded."""
    in_flight: set[asyncio.Future[T]] = set()
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
            for task in done:
                yield task.result()
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Seek by value (Valomnia: lastUpdated_gte + sort=lastUpdated&order=asc, offset/max)
# ---------------------------------------------------------------------------------------------


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
        self, fetch: Fetch, *, start: datetime | None, concurrency: int
    ) -> AsyncIterator[Page]:
        lower = start
        exclusive = False
        number = 0
        previous_ids: tuple[Any, ...] | None = None
        while True:
            bounds = (
                {} if lower is None else {(self.gt_param if exclusive else self.gte_param): lower}
            )
            response = await fetch(self._params(0, **bounds))
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
                    self._params(offset, **{self.gte_param: value, self.lte_param: value})
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
