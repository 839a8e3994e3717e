"""What every paginator shares: the immutable `Page` it yields, the `Paginator` protocol
(`pages()` starts a fresh, single-use walk), and reading the record list out of a body."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pipeline.errors import PaginationError
from pipeline.extract.http import JsonResponse
from pipeline.records import dig

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


def page_records(body: Any, path: Sequence[str]) -> list[Any]:
    """Bodies are checked by the HTTP client (and retried) before they get here; this is the
    paginator's own guard against a shape it cannot walk."""
    try:
        return records_at(body, path)
    except ValueError as exc:
        raise PaginationError(str(exc)) from None
