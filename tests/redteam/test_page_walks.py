"""Red-team finding "unbounded page walks": paging fields that are not what the API documents
were guessed at: taken for missing ones (a walk trusting them ended after page 1 and called the
scan complete) or, for a digit `int()` does not know, an internal error.

A bad paging field fails the stream, naming the field, never as an internal error. Lying
sources are the simulators with a `Rewrite` fault (a field or header replaced).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.run import StreamOutcome
from pipeline.sandbox import (
    AfostoSimulator,
    Rewrite,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
)
from tests.helpers import make_settings, sync

WATCHDOG_SECONDS = 20  # before the fix a walk never ended: the test fails instead of hanging


async def _sync(engine: AsyncEngine, settings: Settings, *names: str) -> dict[str, StreamOutcome]:
    async with asyncio.timeout(WATCHDOG_SECONDS):
        return await sync(engine, settings, *names)


# ---- 5. bad paging fields are the source's error, named ----------------------------------------

# (id, simulator, source, stream, list path, the fault, the field the message names)
BAD_FIELDS: list[tuple[str, Callable[[], Any], str, str, str, Rewrite, str]] = [
    *(
        (
            f"soho total_pages {value!r}",
            lambda: SohoSimulator(customers=60, seed=12),
            "soho",
            "customers",
            "/api/v1/customers",
            Rewrite(fields={"total_pages": value}),
            "total_pages",
        )
        for value in ("lots", -5, 2.5, 10**30, "²")
    ),
    *(
        (
            f"soho next_page {value!r}",
            lambda: SohoSimulator(customers=60, seed=12),
            "soho",
            "customers",
            "/api/v1/customers",
            Rewrite(fields={"next_page": value}),
            "next_page",
        )
        for value in ("x", {"page": 2}, True, 7)
    ),
    (
        "soho current_page '²'",
        lambda: SohoSimulator(customers=60, seed=12),
        "soho",
        "customers",
        "/api/v1/customers",
        Rewrite(fields={"current_page": "²"}),
        "current_page",
    ),
    *(
        (
            f"afosto x-count {value!r}",
            lambda: AfostoSimulator(contacts=1, shipments=60, parcels=1, groups=1, seed=12),
            "afosto",
            "shipments",
            "/lcs/shipments",
            Rewrite(headers={"x-count": value}),
            "x-count",
        )
        for value in ("abc", "-5", "²")
    ),
    (
        "afosto x-page 'abc'",
        lambda: AfostoSimulator(contacts=1, shipments=60, parcels=1, groups=1, seed=12),
        "afosto",
        "shipments",
        "/lcs/shipments",
        Rewrite(headers={"x-page": "abc"}),
        "x-page",
    ),
    *(
        (
            f"sparkfly total_pages {value!r}",
            lambda: SparkflySimulator(credentials=120, seed=12),
            "sparkfly",
            "credentials",
            "/v1.0/credentials",
            Rewrite(fields={"total_pages": value}),
            "total_pages",
        )
        for value in ("lots", -1, 10**30, 0)  # 0: page 1 holds records all the same
    ),
    (
        "valomnia paging.total true",
        lambda: ValomniaSimulator(authorities=230, seed=12),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        Rewrite(fields={"paging.total": True}),
        "paging.total",
    ),
    (
        "valomnia paging 'lots'",
        lambda: ValomniaSimulator(authorities=230, seed=12),
        "valomnia",
        "authorities",
        "/api/v2.1/authorities",
        Rewrite(fields={"paging": "lots"}),
        "paging",
    ),
]


@pytest.mark.parametrize(
    ("make", "source", "stream", "path", "fault", "field"),
    [case[1:] for case in BAD_FIELDS],
    ids=[case[0] for case in BAD_FIELDS],
)
async def test_a_bad_paging_field_fails_the_stream_naming_the_field(
    engine: AsyncEngine,
    make: Callable[[], Any],
    source: str,
    stream: str,
    path: str,
    fault: Rewrite,
    field: str,
) -> None:
    """Before: most were taken for a missing field (Sparkfly's walk then ended after page 1 and
    called the scan complete; Valomnia's after one page), and a digit int() does not know
    ("²") was an internal error."""
    async with serve(make()) as running:
        running.sim.faults.add(fault, times=None, path_prefix=path)
        streams = {f"{source}.{stream}": {"page_size": 25}}
        settings = make_settings(**{source: running}, streams=streams)  # type: ignore[arg-type]
        outcome = (await _sync(engine, settings, f"{source}.{stream}"))[f"{source}.{stream}"]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith(f"{source}.{stream}: ") and "internal error" not in error
    assert field in error and "does not page as documented" in error
