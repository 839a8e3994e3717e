"""The load meter: what every simulator counts of the requests it is sent (in flight, per second)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from pipeline.sandbox import RunningSimulator, SohoSimulator, serve
from pipeline.sandbox.meter import LoadMeter

from .conftest import soho_headers


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_in_flight_peak_and_reset() -> None:
    meter = LoadMeter()
    for _ in range(3):
        meter.started()
    meter.finished()
    meter.started()
    assert (meter.in_flight, meter.peak_in_flight, meter.started_total) == (3, 3, 4)
    meter.finished()
    meter.reset()
    # Requests still in flight stay counted after a reset; the peaks start again from them.
    assert (meter.in_flight, meter.peak_in_flight, meter.peak_per_second) == (2, 2, 0)
    meter.started()
    assert meter.peak_in_flight == 3 and meter.peak_per_second == 1


def test_the_per_second_window_is_exact_and_slides() -> None:
    clock = FakeClock()
    meter = LoadMeter(clock)
    for offset in (0.0, 0.3, 0.6, 0.999):
        clock.now = 100.0 + offset
        meter.started()
    assert meter.peak_per_second == 4  # all four within less than a second
    clock.now = 101.0  # exactly one second after the first: the first has left the window
    meter.started()
    assert meter.peak_per_second == 4
    clock.now = 101.2  # 0.3, 0.6, 0.999, 1.0, 1.2: five within one second, across the boundary
    meter.started()
    assert meter.peak_per_second == 5


def test_evenly_spaced_starts_at_the_rate_fill_a_window_to_the_rate_and_no_more() -> None:
    clock = FakeClock()
    meter = LoadMeter(clock)
    for n in range(100):
        clock.now = 100.0 + n * 0.05  # 20 a second, exactly
        meter.started()
        meter.finished()
    assert meter.peak_per_second == 20 and meter.peak_in_flight == 1


async def test_concurrent_requests_are_counted_until_answered(
    http: aiohttp.ClientSession,
) -> None:
    sim = SohoSimulator(customers=5, seed=3, latency=0.1)
    async with serve(sim) as running:
        url = f"{running.url}/api/v1/customers"

        async def one() -> int:
            async with http.get(url, headers=soho_headers(running)) as response:
                await response.read()
                return response.status

        pending = [asyncio.create_task(one()) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert sim.in_flight == 5
        assert await asyncio.gather(*pending) == [200] * 5
        assert (sim.in_flight, sim.peak_in_flight, sim.peak_per_second) == (0, 5, 5)


async def test_a_request_whose_client_hung_up_leaves_when_its_handler_is_cancelled(
    soho: RunningSimulator,
) -> None:
    sim = soho.sim
    sim.latency = 5.0
    async with aiohttp.ClientSession() as http:
        request = asyncio.create_task(
            http.get(f"{soho.url}/api/v1/customers", headers=soho_headers(soho))
        )
        await asyncio.sleep(0.1)
        assert sim.in_flight == 1
        request.cancel()  # closes the connection; the server cancels the handler
        await asyncio.gather(request, return_exceptions=True)
    for _ in range(50):
        if sim.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert sim.in_flight == 0 and sim.peak_in_flight == 1


async def test_a_server_that_finishes_abandoned_requests_keeps_counting_them() -> None:
    sim = SohoSimulator(customers=5, seed=3, latency=0.3)
    async with serve(sim, finish_abandoned=True) as running:
        async with aiohttp.ClientSession() as http:
            request = asyncio.create_task(
                http.get(f"{running.url}/api/v1/customers", headers=soho_headers(running))
            )
            await asyncio.sleep(0.1)
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
            await asyncio.sleep(0.05)
            assert sim.in_flight == 1  # still working on it
            await asyncio.sleep(0.3)
            assert sim.in_flight == 0


async def test_control_requests_are_not_counted_and_stats_can_be_read_and_reset(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    for _ in range(3):
        async with http.get(f"{soho.url}/api/v1/me", headers=soho_headers(soho)) as response:
            assert response.status == 200
    async with http.get(f"{soho.url}/_sandbox/stats") as response:
        stats = orjson.loads(await response.read())
    assert stats == {"in_flight": 0, "peak_in_flight": 1, "peak_per_second": 3, "requests": 3}
    async with http.post(f"{soho.url}/_sandbox/reset_stats") as response:
        assert orjson.loads(await response.read())["peak_per_second"] == 0
    assert (soho.sim.peak_in_flight, soho.sim.peak_per_second) == (0, 0)
