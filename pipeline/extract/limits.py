"""A source's limits: how many requests may be in flight at once, and how fast they may start.

The limits belong to the source, not to one client of it: every `HttpClient` of a source in a
process takes its slots and its start times from one `SourceLimits`, so two runs of one source
at once (the scheduler fires jobs side by side) share one cap and one rate instead of doubling
them. A process holds one `LimitsBySource` and hands it to every run.
"""

from __future__ import annotations

import asyncio
import math
import time

from pipeline.logs import get_logger

log = get_logger(__name__)


class RateLimiter:
    """Spaces request starts evenly so no one-second window ever holds more than `rate`.

    A token bucket would allow a burst of `rate` at once and so up to twice the rate in some
    window; sources document per-second limits, so even spacing is the polite reading. Each
    start is spaced from the moment the previous one really started, not from when it was due:
    a start that woke late (a busy event loop) must not shorten the gap to the next. The
    spacing is 5% wider than the rate, for the jitter between a start here and its arrival at
    the server (with 2 %, a loaded 2-core machine showed 21 arrivals in one second on a rate of
    20: a 20 ms margin is less than one stall of the event loop).
    """

    MARGIN = 1.05

    def __init__(self, per_second: float | None) -> None:
        self._interval = self.MARGIN / per_second if per_second else 0.0
        self._last_start = -math.inf
        self._lock = asyncio.Lock()

    @property
    def limited(self) -> bool:
        return bool(self._interval)

    async def wait(self) -> None:
        """Return when the caller may start; the caller then sends at once (no await)."""
        if not self._interval:
            return
        async with self._lock:  # callers take their turns in order
            delay = self._last_start + self._interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last_start = time.monotonic()


class SourceLimits:
    """One source's cap (`slots`: one per request the server may be working on) and rate."""

    def __init__(self, max_concurrency: int, requests_per_second: float | None) -> None:
        self.max_concurrency = max_concurrency
        self.requests_per_second = requests_per_second
        self.slots = asyncio.Semaphore(max_concurrency)
        self.rate = RateLimiter(requests_per_second)


class LimitsBySource:
    """The limits of every source a process talks to, created on first use."""

    def __init__(self) -> None:
        self._limits: dict[str, SourceLimits] = {}

    def of(
        self, source: str, max_concurrency: int, requests_per_second: float | None
    ) -> SourceLimits:
        limits = self._limits.get(source)
        if limits is None:
            limits = self._limits[source] = SourceLimits(max_concurrency, requests_per_second)
        elif (limits.max_concurrency, limits.requests_per_second) != (
            max_concurrency,
            requests_per_second,
        ):
            # A source has one set of limits in a process: the first run's. Runs of one
            # process share one configuration, so this only follows a change made mid-way.
            log.warning(
                "source_limits_kept",
                source=source,
                max_concurrency=limits.max_concurrency,
                requests_per_second=limits.requests_per_second,
            )
        return limits
