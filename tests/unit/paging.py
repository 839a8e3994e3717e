"""A `fetch` for walking paginators without a server: the test says how to answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.extract.http import JsonResponse

Answer = Callable[[Mapping[str, str], Mapping[str, str]], JsonResponse]


def response(body: Any, headers: Mapping[str, str] | None = None) -> JsonResponse:
    return JsonResponse(200, dict(headers or {}), body, "/fake")


@dataclass
class Server:
    """Records what was asked and how many asks were in flight at once, and refuses to answer
    forever: a walk that never ends fails the test instead of hanging the suite."""

    answer: Answer
    limit: int = 500
    asked: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0

    async def __call__(self, params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
        self.asked.append((dict(params), dict(headers)))
        if len(self.asked) > self.limit:
            raise AssertionError(f"the walk did not end after {self.limit} requests")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            for _ in range(3):  # let the walk's other requests start meanwhile
                await asyncio.sleep(0)
            return self.answer(params, headers)
        finally:
            self.in_flight -= 1
