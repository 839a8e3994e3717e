"""Paging by value (Valomnia: `lastUpdated_gte` + `sort=lastUpdated&order=asc`, offset/max),
so records changing or vanishing mid-walk cannot shift unread ones past it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import PaginationError
from pipeline.extract.paginators import fields
from pipeline.extract.paginators.base import Fetch, Page, Paginator, page_records
from pipeline.records import parse_timestamp


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

    def _total(self, body: Any, number: int) -> int | None:
        return fields.count_at(body, self.total_path, number)

    def _is_last(self, body: Any, offset: int, count: int, number: int) -> bool:
        total = self._total(body, number)
        if total is not None:
            return offset + count >= total
        return fields.at(body, self.next_path, number) is None

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
            records = page_records(response.body, self.records_path)
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
            if self._is_last(response.body, 0, len(records), number):
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
                records = page_records(response.body, self.records_path)
                total = self._total(response.body, number + 1)
                if expected_total is None:
                    expected_total = total
                elif total != expected_total:
                    stable = False
                if records:
                    number += 1
                    yield Page(records, number, checkpoint=value)
                if not records or self._is_last(response.body, offset, len(records), number):
                    break
                offset += len(records)
            if stable:
                return
        raise PaginationError(
            f"the group of records sharing {self.cursor_field}={format_utc_seconds(value)} kept "
            f"changing size while being read ({self.max_tie_restarts + 1} attempts)"
        )
