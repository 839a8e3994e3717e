"""One request answers the whole set (DigiLocker's form posts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.extract.paginators.base import Fetch, Page, Paginator, page_records, records_at


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
        records = (
            [response.body] if self.whole_body else page_records(response.body, self.records_path)
        )
        if records:
            yield Page(records, 1)
