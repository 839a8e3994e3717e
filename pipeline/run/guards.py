"""The limits of one run of a stream: `max_pages` list pages asked for, `max_run_seconds`.

A paginator ends when the source says so; a source that never does (a `next_page` that never
ends, records that keep coming, a request that never answers) would hold the stream's lock
and its source's slots forever. These guards end such a run as failed, naming the limit and
the setting to raise. Every list page of the run counts (a partitioned stream's parent list
and each partition's together); what was committed before stands, and the write transaction
in flight when the time runs out rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

from pipeline.errors import RunLimitExceeded
from pipeline.extract.http import JsonResponse
from pipeline.extract.paginators import Fetch
from pipeline.targets import StreamTarget


@dataclass
class RunGuards:
    """One run's page count and time limit; `counting` wraps each list's fetch, `timed` the
    run's strategy."""

    table: str  # the stream's settings table, e.g. "[sources.soho.streams.customers]"
    max_pages: int
    max_seconds: float
    pages: int = 0

    @classmethod
    def of(cls, target: StreamTarget) -> RunGuards:
        settings = target.settings
        table = f"[sources.{target.instance}.streams.{target.stream.name}]"
        return cls(table, settings.max_pages, settings.max_run_seconds)

    def counting(self, fetch: Fetch) -> Fetch:
        async def counted(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
            if self.pages >= self.max_pages:
                raise RunLimitExceeded(
                    f"read {self.max_pages:,} pages, the stream's max_pages, and its list had "
                    "not ended; the source may be paging endlessly (check it), or raise "
                    f"max_pages in {self.table}"
                )
            self.pages += 1
            return await fetch(params, headers)

        return counted

    async def timed(self, work: Awaitable[None]) -> None:
        """Await `work`, cancelled once the run has taken `max_seconds`, even while it waits
        on one request or one statement."""
        limit = asyncio.timeout(self.max_seconds)
        try:
            async with limit:
                await work
        except TimeoutError:
            if not limit.expired():
                raise  # a timeout of the work's own
            raise RunLimitExceeded(
                f"ran for {self.max_seconds:,g} s, the stream's max_run_seconds, and was "
                "stopped (what it had committed stands); the source may be paging endlessly "
                f"or hanging (check it), or raise max_run_seconds in {self.table}"
            ) from None
