"""Fixtures: simulators served on loopback and a real aiohttp client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve

VALOMNIA_PASSWORD = "s3cret-sandbox"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: aiohttp's default jar ignores cookies set by IP-address hosts (127.0.0.1).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield session


@pytest.fixture
async def soho() -> AsyncIterator[RunningSimulator]:
    async with serve(SohoSimulator(customers=60, seed=3)) as running:
        yield running


@pytest.fixture
async def valomnia() -> AsyncIterator[RunningSimulator]:
    sim = ValomniaSimulator(authorities=300, seed=2, password=VALOMNIA_PASSWORD)
    async with serve(sim) as running:
        yield running


def soho_headers(running: RunningSimulator) -> dict[str, str]:
    assert isinstance(running.sim, SohoSimulator)
    return {"Authorization": f"Bearer {running.sim.token}", "Content-Type": "application/json"}


async def valomnia_login(http: aiohttp.ClientSession, running: RunningSimulator) -> str:
    """Log in through the documented form; the session cookie lands in `http`'s jar."""
    form = {"j_username": "etl@example.com", "j_password": VALOMNIA_PASSWORD, "ajax": "true"}
    async with http.post(f"{running.url}/j_spring_security_check", data=form) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["success"] is True
    return str(body["token"])
