"""How hard a client pushes a simulator: API requests in flight at once, and per second.

A source's documented limits are about what its server sees, so they are measured here, at
the server, not trusted from the client's own bookkeeping. The meter knows nothing of any
client's limits: tests compare its peaks with the limits they configured.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW_SECONDS = 1.0


class LoadMeter:
    """Counts API requests from arrival until their handler finishes (or is cancelled, when
    the client went away), and request starts in every one-second window.

    The window check is exact: the peak is the most starts that lie less than one second
    apart, over any placement of the window, not per calendar second.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_per_second = 0
        self.started_total = 0
        self._recent: deque[float] = deque()

    def started(self) -> None:
        now = self._clock()
        self.started_total += 1
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        recent = self._recent
        recent.append(now)
        while now - recent[0] >= WINDOW_SECONDS:
            recent.popleft()
        if len(recent) > self.peak_per_second:
            self.peak_per_second = len(recent)

    def finished(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Forget the peaks; requests still in flight stay counted (they are still there)."""
        self.peak_in_flight = self.in_flight
        self.peak_per_second = 0
        self.started_total = 0
        self._recent.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "peak_per_second": self.peak_per_second,
            "requests": self.started_total,
        }
