"""How a list endpoint is walked. One class per paging style the sources use.

A paginator is declared with its parameter names (data), and `pages()` starts a fresh, single-use
walk: all walking state lives in that generator. It yields `Page`s; for sorted streams each page
carries the checkpoint that is safe to commit once the page is stored.

A page that repeats its predecessor, a server that ignores the page we asked for, or a paging
field that is not what the API documents (`fields`) is an error (`PaginationError`), never an
endless loop or a guess. A page count far beyond the records (a run of empty pages past them)
ends the walk with `ListEndedEarly`, after the pages read; a list that truly never ends is
bounded by the run's `max_pages` (`pipeline.run.guards`).
"""

from __future__ import annotations

from pipeline.extract.paginators.base import Fetch, Page, Paginator, merge, records_at
from pipeline.extract.paginators.numbered import (
    HeaderPages,
    NumberedPages,
    OffsetPages,
    PageNumberPages,
    PageRead,
)
from pipeline.extract.paginators.seek import ValueSeekPages, format_utc_seconds
from pipeline.extract.paginators.single import SingleResponse

__all__ = [
    "Fetch",
    "HeaderPages",
    "NumberedPages",
    "OffsetPages",
    "Page",
    "PageNumberPages",
    "PageRead",
    "Paginator",
    "SingleResponse",
    "ValueSeekPages",
    "format_utc_seconds",
    "merge",
    "records_at",
]
