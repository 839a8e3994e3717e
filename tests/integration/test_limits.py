"""The per-source concurrency cap and request rate, as the server sees them, whatever runs.

These simulators finish the requests their client walked away from (`finish_abandoned`), as
real servers do: a page fetch the client cancels still loads the server until it is answered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.extract.limits import LimitsBySource
from pipeline.sandbox import AfostoSimulator, RunningSimulator, serve
from pipeline.scheduler import StreamScheduler
from pipeline.targets import build_client, select_streams
from tests.helpers import make_settings, rows, scalar, sync

CAP = 4
AFOSTO_STREAMS = ("contacts", "shipments", "parcels", "prices")


@pytest.fixture
async def afosto() -> AsyncIterator[RunningSimulator]:
    # Record counts that fill whole pages of 25: every list then asks for pages beyond its last
    # (an empty page ends it), fetched ahead and cancelled when the empty one comes back.
    sim = AfostoSimulator(
        contacts=300, shipments=500, parcels=400, groups=5, prices_per_group=50, seed=91
    )
    # Answers at random times, so look-ahead pages are still out when a list's empty page comes.
    sim.latency, sim.latency_jitter = 0.02, 0.03
    async with serve(sim, finish_abandoned=True) as running:
        yield running


def _small_pages(*streams: str) -> dict[str, dict[str, int]]:
    return {f"afosto.{name}": {"page_size": 25} for name in streams}


def _pages_asked(sim: AfostoSimulator, path: str) -> list[int]:
    return sorted(int(r.header("x-page") or 0) for r in sim.requests if r.path == path)


def _pages_beyond_the_end(sim: AfostoSimulator, page_size: int = 25) -> int:
    """Requests for pages after a list's first empty page: fetched ahead, then dropped."""
    lengths = Counter(
        {
            "/rel/contacts": len(sim.truth("contacts")),
            "/lcs/shipments": len(sim.truth("shipments")),
            "/lcs/parcels": len(sim.truth("parcels")),
            "/cat/groups": len(sim.truth("groups")),
        }
    )
    lengths.update(f"/cat/groups/{p['price_group_id']}/prices" for p in sim.truth("prices"))
    return sum(
        1
        for r in sim.requests
        if r.path in lengths and int(r.header("x-page") or 0) > lengths[r.path] // page_size + 1
    )


async def test_all_afosto_streams_at_once_never_exceed_the_cap(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    settings = make_settings(
        afosto=afosto, afosto_extra={"max_concurrency": CAP}, streams=_small_pages(*AFOSTO_STREAMS)
    )
    outcomes = await sync(engine, settings)

    assert all(o.status == "succeeded" for o in outcomes.values()), outcomes
    # Every list reads ahead until an empty page; what was asked beyond it was dropped.
    assert _pages_beyond_the_end(sim) > 0
    assert sim.peak_in_flight == CAP


async def test_look_ahead_dropped_at_the_end_of_a_scan_is_not_overtaken_by_delete_probes(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    # Pages answered at random times: the empty page comes back while later ones are still in
    # flight, and those are still at the server when the probes go out.
    sim.latency, sim.latency_jitter = 0.05, 0.1
    settings = make_settings(afosto=afosto, streams=_small_pages("contacts"))
    assert (await sync(engine, settings, "contacts"))["afosto.contacts"].status == "succeeded"
    for contact in sim.truth("contacts")[:CAP]:
        sim.delete_contact(contact["id"])
    sim.reset_load()

    outcome = (await sync(engine, settings, "contacts"))["afosto.contacts"]

    assert outcome.status == "succeeded" and outcome.deleted == CAP
    probes = [r for r in sim.requests if r.path.startswith("/rel/contacts/")]
    assert len(probes) == CAP
    assert max(_pages_asked(sim, "/rel/contacts")) > 13  # pages beyond the empty 13th were asked
    assert sim.peak_in_flight == CAP


async def test_two_scheduled_runs_of_one_source_share_its_cap(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    sim.latency, sim.latency_jitter = 0.05, 0.0
    every_second = {"schedule": "* * * * * *"}
    streams = {
        name: {**body, **every_second}
        for name, body in _small_pages("shipments", "parcels").items()
    }
    streams |= {"afosto.contacts": {"enabled": False}, "afosto.prices": {"enabled": False}}
    settings = make_settings(afosto=afosto, afosto_extra={"max_concurrency": CAP}, streams=streams)
    stop = asyncio.Event()
    serving = asyncio.create_task(StreamScheduler(settings, engine, stop).serve(grace_seconds=5))
    try:
        for _ in range(300):
            succeeded = await scalar(
                engine,
                "SELECT count(DISTINCT stream) FROM pipeline.sync_runs WHERE status = 'succeeded'",
            )
            if succeeded == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 15)

    assert succeeded == 2
    runs = await rows(
        engine, "SELECT stream, started_at, finished_at FROM pipeline.sync_runs ORDER BY id"
    )
    # The two streams fired on the same second and ran side by side, each in its own run.
    assert any(
        a.stream != b.stream and a.started_at < b.finished_at and b.started_at < a.finished_at
        for a, b in itertools.combinations([r for r in runs if r.finished_at], 2)
    )
    assert sim.peak_in_flight == CAP


async def test_clients_sharing_a_sources_limits_share_its_rate(afosto: RunningSimulator) -> None:
    """What two runs of the scheduler do (each builds its client from the process's limits),
    without their database work: a stall of the event loop between a request's start and the
    server counting it would blur a one-second window by its length."""
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    rate = 20
    settings = make_settings(
        afosto=afosto, afosto_extra={"max_concurrency": CAP, "requests_per_second": rate}
    )
    [target] = select_streams(settings, ["afosto.contacts"])
    limits = LimitsBySource()

    async def run() -> None:
        async with build_client(target.source, target.config, limits) as client:
            page = {"x-page": "1", "x-page-size": "5"}
            await asyncio.gather(*(client.get("/rel/contacts", headers=page) for _ in range(15)))

    await asyncio.gather(run(), run())

    assert len(sim.requests) == 30
    assert sim.peak_per_second <= rate  # two clients with a rate each: 30 within a second


async def test_a_request_its_caller_gave_up_on_keeps_its_slot_until_answered(
    afosto: RunningSimulator,
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    sim.latency, sim.latency_jitter = 0.3, 0.0
    settings = make_settings(afosto=afosto, afosto_extra={"max_concurrency": 1})
    [target] = select_streams(settings, ["afosto.contacts"])
    page = {"x-page": "1", "x-page-size": "5"}
    async with build_client(target.source, target.config) as client:
        dropped = asyncio.create_task(client.get("/rel/contacts", headers=page))
        await asyncio.sleep(0.1)
        assert sim.in_flight == 1
        dropped.cancel()
        await asyncio.gather(dropped, return_exceptions=True)
        answered = await client.get("/rel/contacts", headers=page)
        assert answered.status == 200
        first, second = sorted(r.at for r in sim.requests)
        assert second - first >= 0.3  # sent only once the server was done with the first
        late = asyncio.create_task(client.get("/rel/contacts", headers=page))
        await asyncio.sleep(0.1)
        late.cancel()
    # Leaving the client waited for the abandoned request instead of cutting it off.
    assert [r.status for r in sim.requests] == [200, 200, 200]
    assert sim.in_flight == 0 and sim.peak_in_flight == 1


async def test_a_request_still_waiting_for_its_turn_is_dropped(afosto: RunningSimulator) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    settings = make_settings(afosto=afosto, afosto_extra={"requests_per_second": 2})
    [target] = select_streams(settings, ["afosto.contacts"])
    page = {"x-page": "1", "x-page-size": "5"}
    async with build_client(target.source, target.config) as client:
        first = asyncio.create_task(client.get("/rel/contacts", headers=page))
        waiting = asyncio.create_task(client.get("/rel/contacts", headers=page))
        await asyncio.sleep(0.2)  # the second is due 0.51 s after the first
        waiting.cancel()
        await asyncio.gather(first, waiting, return_exceptions=True)
        assert len(sim.requests) == 1 and client.requests_sent == 1
        started = asyncio.get_running_loop().time()
        await client.get("/rel/contacts", headers=page)  # its slot and its turn are free again
        assert asyncio.get_running_loop().time() - started < 0.5
    assert len(sim.requests) == 2


async def test_no_slot_is_lost_whenever_callers_are_cancelled(afosto: RunningSimulator) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    sim.latency, sim.latency_jitter = 0.005, 0.01
    settings = make_settings(afosto=afosto, afosto_extra={"max_concurrency": 2})
    [target] = select_streams(settings, ["afosto.contacts"])
    page = {"x-page": "1", "x-page-size": "2"}
    rng = random.Random(5)
    async with build_client(target.source, target.config) as client:
        for _ in range(60):
            calls = [
                asyncio.create_task(client.get("/rel/contacts", headers=page)) for _ in range(4)
            ]
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)  # cancel before, while and after the requests start
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.02))
            for call in rng.sample(calls, 2):
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
        sim.latency, sim.latency_jitter = 0.1, 0.0
        sim.reset_load()
        answers = await asyncio.gather(
            *(client.get("/rel/contacts", headers=page) for _ in range(4))
        )
    assert [a.status for a in answers] == [200] * 4
    assert sim.peak_in_flight == 2  # both slots came back, and no more than both
