"""Shared simulator machinery: faults, latency, rate limit, hooks, request log, control routes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.sandbox import (
    DropConnection,
    HtmlPage,
    HttpError,
    LoggedRequest,
    Rewrite,
    RunningSimulator,
    Simulator,
    SohoSimulator,
    Stall,
    TruncatedBody,
    ValomniaSimulator,
    serve,
    start,
)

from .conftest import soho_headers, valomnia_login


def soho_sim(running: RunningSimulator) -> SohoSimulator:
    assert isinstance(running.sim, SohoSimulator)
    return running.sim


async def get(
    http: aiohttp.ClientSession, running: RunningSimulator, path: str = "/api/v1/me"
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with http.get(f"{running.url}{path}", headers=soho_headers(running)) as response:
        return response.status, response.headers, await response.read()


# --------------------------------------------------------------------------- faults


async def test_429_with_retry_after_seconds(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    soho_sim(soho).faults.add(HttpError(429, retry_after="2"))
    status, headers, body = await get(http, soho)
    assert status == 429
    assert headers["Retry-After"] == "2"
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    parsed = orjson.loads(body)
    assert parsed["status"] == "error" and parsed["errors"][0]["path"] == "request"
    assert (await get(http, soho))[0] == 200


async def test_retry_after_http_date_and_source_body(http: aiohttp.ClientSession) -> None:
    sim = ValomniaSimulator(authorities=3, api_token="t")
    sim.faults.add(HttpError(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    async with serve(sim) as running:
        url = f"{running.url}/api/v2.1/authorities"
        async with http.get(url, headers={"Authorization": "Bearer t"}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
            assert await response.json() == {
                "error": "server_error",
                "error_description": "Oops! Something went wrong...",
            }


async def test_custom_error_body(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    soho_sim(soho).faults.add(HttpError(500, body=b"boom", content_type="text/plain"))
    status, headers, body = await get(http, soho)
    assert (status, headers["Content-Type"], body) == (500, "text/plain", b"boom")


async def test_burst_then_success(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    entry = sim.faults.add(HttpError(503), times=3)
    statuses = [(await get(http, soho))[0] for _ in range(5)]
    assert statuses == [503, 503, 503, 200, 200]
    assert entry.fired == 3 and sim.faults.pending == []
    assert [r.status for r in sim.requests] == statuses
    assert [r.fault for r in sim.requests] == ["http_error"] * 3 + [None, None]


async def test_after_and_matching(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    sim.faults.add(HttpError(502), times=2, after=2, path_prefix="/api/v1/customers", method="GET")
    statuses = []
    for _ in range(6):
        statuses.append((await get(http, soho, "/api/v1/customers"))[0])
        statuses.append((await get(http, soho, "/api/v1/me"))[0])
    assert statuses[0::2] == [200, 200, 502, 502, 200, 200]
    assert set(statuses[1::2]) == {200}


async def test_forever_until_cleared(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    sim.faults.add(HttpError(504), times=None)
    assert [(await get(http, soho))[0] for _ in range(4)] == [504] * 4
    sim.faults.clear()
    assert (await get(http, soho))[0] == 200


async def test_rate_faults_are_seeded(http: aiohttp.ClientSession) -> None:
    async def run() -> list[int]:
        sim = SohoSimulator(customers=1, seed=21)
        sim.faults.add(HttpError(503), rate=0.5)
        async with serve(sim) as running:
            return [(await get(http, running))[0] for _ in range(20)]

    first, second = await run(), await run()
    assert first == second
    assert 3 <= first.count(503) <= 17


async def test_drop_connection_mid_body(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    sim = soho_sim(soho)
    sim.faults.add(DropConnection())
    with pytest.raises(aiohttp.ClientPayloadError):
        await get(http, soho, "/api/v1/customers")
    assert sim.requests[-1].status == 200 and sim.requests[-1].fault == "drop_connection"
    assert (await get(http, soho, "/api/v1/customers"))[0] == 200


async def test_drop_connection_before_headers(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    sim = soho_sim(soho)
    # aiohttp silently retries an idempotent request once after a disconnect: drop both.
    sim.faults.add(DropConnection(send_headers=False), times=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(http, soho)
    assert [r.status for r in sim.requests] == [0, 0]


async def test_truncated_body(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    soho_sim(soho).faults.add(TruncatedBody())
    status, _, body = await get(http, soho, "/api/v1/customers")
    assert status == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)


async def test_rewrite_replaces_fields_and_headers_of_the_normal_answer(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    """A lying server: values no honest one sends (an integer beyond 64 bits, a nested field
    of the wrong type), headers set and removed; the rest of the answer is untouched."""
    honest_status, honest_headers, honest = await get(http, soho, "/api/v1/customers")
    fault = Rewrite(
        fields={"total_pages": 10**30, "paging.next": "x"},
        headers={"X-Count": "abc", "Content-Type": None, "content-type": "application/json"},
    )
    soho_sim(soho).faults.add(fault, times=1)
    status, headers, body = await get(http, soho, "/api/v1/customers")
    assert status == honest_status == 200
    assert headers["x-count"] == "abc" and headers["Content-Type"] == "application/json"
    assert b'"total_pages":1000000000000000000000000000000' in body
    lied = orjson.loads(body)
    expected = {**orjson.loads(honest), "total_pages": 1e30, "paging": {"next": "x"}}
    assert lied == expected
    assert "x-count" not in honest_headers
    assert (await get(http, soho, "/api/v1/customers"))[2] == honest  # once, as scheduled


async def test_html_page(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    soho_sim(soho).faults.add(HtmlPage(502))
    status, headers, body = await get(http, soho)
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert b"<html>" in body and b"502 Bad Gateway" in body


async def test_stall_exceeds_client_timeout(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    soho_sim(soho).faults.add(Stall(2.0))
    timeout = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            f"{soho.url}/api/v1/me", headers=soho_headers(soho), timeout=timeout
        ) as response:
            await response.read()
    assert (await get(http, soho))[0] == 200


async def test_latency(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    soho_sim(soho).latency = 0.15
    started = time.monotonic()
    await get(http, soho)
    assert time.monotonic() - started >= 0.15
    soho_sim(soho).latency = 0
    started = time.monotonic()
    await get(http, soho)
    assert time.monotonic() - started < 0.15


async def test_server_side_rate_limit(http: aiohttp.ClientSession) -> None:
    sim = SohoSimulator(customers=1, rate_limit_per_second=5)
    async with serve(sim) as running:
        results = [await get(http, running) for _ in range(12)]
    limited = [r for r in results if r[0] == 429]
    assert 5 <= len(results) - len(limited) <= 7
    assert limited and all(r[1]["Retry-After"] == "1" for r in limited)
    assert orjson.loads(limited[0][2])["status"] == "error"


# --------------------------------------------------------------------------- log and hooks


async def test_request_log(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    url = f"{soho.url}/api/v1/customers?page=2&per=5&per=6"
    async with http.get(url, headers=soho_headers(soho)) as response:
        assert response.status == 200
    async with http.get(f"{soho.url}/_sandbox/requests") as response:
        assert response.status == 200
    assert len(sim.requests) == 1  # control routes are not logged
    entry = sim.requests[0]
    assert isinstance(entry, LoggedRequest)
    assert (entry.seq, entry.method, entry.path, entry.status) == (
        1,
        "GET",
        "/api/v1/customers",
        200,
    )
    assert entry.query_items == [("page", "2"), ("per", "5"), ("per", "6")]
    assert entry.query["page"] == "2"
    assert entry.header("Authorization") == f"Bearer {sim.token}"
    assert entry.headers["authorization"] == f"Bearer {sim.token}"
    assert entry.at <= time.monotonic()
    sim.clear_requests()
    assert sim.requests == []


async def test_hooks_sync_and_async(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    calls: list[str] = []

    def sync_hook(s: Simulator, request: LoggedRequest) -> None:
        calls.append(f"sync {request.seq} {request.status}")

    async def async_hook(s: Simulator, request: LoggedRequest) -> None:
        await asyncio.sleep(0)
        calls.append(f"async {request.seq}")

    remove_sync = sim.on_request(sync_hook)
    sim.on_request(async_hook)
    await get(http, soho)
    remove_sync()
    await get(http, soho)
    assert calls == ["sync 1 None", "async 1", "async 2"]


async def test_hook_runs_before_the_handler(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    sim = soho_sim(soho)
    target = sim.truth()[0]["id"]

    def delete_it(s: Simulator, request: LoggedRequest) -> None:
        if request.path.endswith(f"/{target}"):
            sim.delete_customer(target)

    sim.on_request(delete_it)
    status, _, body = await get(http, soho, f"/api/v1/customers/{target}")
    assert (status, body) == (404, b'"Not found"')


async def test_unknown_route_gets_source_404(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    status, _, body = await get(http, soho, "/api/v1/nothing")
    assert (status, body) == (404, b'"Not found"')


# --------------------------------------------------------------------------- control routes


async def test_control_routes(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = soho_sim(soho)
    ctl = f"{soho.url}/_sandbox"
    async with http.get(f"{ctl}/info") as response:
        info = await response.json()
    assert info["token"] == sim.token and info["customers"] == 60

    async with http.post(
        f"{ctl}/faults", json={"kind": "http_error", "status": 503, "times": 2, "retry_after": "1"}
    ) as response:
        assert response.status == 200
        assert (await response.json())["scheduled"]["times_left"] == 2
    async with http.get(f"{ctl}/faults") as response:
        assert len((await response.json())["pending"]) == 1
    assert [(await get(http, soho))[0] for _ in range(3)] == [503, 503, 200]

    async with http.post(f"{ctl}/faults", json={"kind": "stall", "seconds": 5, "times": None}):
        pass
    async with http.post(f"{ctl}/clear_faults") as response:
        assert (await response.json()) == {"pending": []}
    async with http.post(f"{ctl}/faults", json={"kind": "meteor"}) as response:
        assert response.status == 400

    async with http.get(f"{ctl}/requests", params={"limit": "2"}) as response:
        log = await response.json()
    assert log["count"] == 3 and [r["seq"] for r in log["recent"]] == [2, 3]
    async with http.post(f"{ctl}/clear_requests"):
        assert sim.requests == []

    async with http.post(f"{ctl}/latency", json={"seconds": 0.05}) as response:
        assert (await response.json())["seconds"] == 0.05
    assert sim.latency == 0.05
    async with http.post(f"{ctl}/rate_limit", json={"per_second": 100}):
        assert sim.rate_limit_per_second == 100
    async with http.post(f"{ctl}/rate_limit", json={"per_second": None}):
        assert sim.rate_limit_per_second is None

    first_id = sim.truth()[0]["id"]
    mutations: list[dict[str, Any]] = [
        {"op": "insert", "email": "ctl@example.com", "at": "2025-01-01T00:00:00Z"},
        {"op": "update", "id": first_id, "profile": {"city": "Gent"}},
        {"op": "delete", "id": sim.truth()[1]["id"]},
    ]
    for mutation in mutations:
        async with http.post(f"{ctl}/mutate", json=mutation) as response:
            assert response.status == 200, await response.text()
    async with http.post(f"{ctl}/mutate", json={"op": "delete", "id": 10**9}) as response:
        assert response.status == 404
    async with http.get(f"{ctl}/records") as response:
        records = await response.json()
    assert records["count"] == 60 and records["records"] == sim.truth()
    assert sim.get(first_id)["profile"]["city"] == "Gent"  # type: ignore[index]
    assert records["records"][-1]["updated_at"] == "2025-01-01T00:00:00.000Z"


async def test_valomnia_control_routes(
    http: aiohttp.ClientSession, valomnia: RunningSimulator
) -> None:
    await valomnia_login(http, valomnia)
    ctl = f"{valomnia.url}/_sandbox"
    async with http.post(
        f"{ctl}/mutate", json={"op": "insert", "name": "CEO", "at": "2025-01-01T00:00:00Z"}
    ) as response:
        created = (await response.json())["result"]
    assert created["lastUpdated"] == "2025-01-01T00:00:00Z"
    async with http.post(f"{ctl}/expire_sessions") as response:
        assert await response.json() == {"expired": 1}
    async with http.get(f"{valomnia.url}/api/v2.1/authorities") as response:
        assert response.status == 401
    async with http.get(f"{ctl}/info") as response:
        assert (await response.json())["login_path"] == "/j_spring_security_check"


# --------------------------------------------------------------------------- serving


async def test_start_and_stop(http: aiohttp.ClientSession) -> None:
    sim = SohoSimulator(customers=2)
    running = await start(sim)
    assert running.port > 0
    assert running.url == f"http://127.0.0.1:{running.port}"
    assert (await get(http, running, "/api/v1/ping"))[0] == 200
    await running.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as fresh:
            await get(fresh, running, "/api/v1/ping")
    async with serve(sim) as again:  # a simulator can be served again, state kept
        assert (await get(http, again, "/api/v1/ping"))[0] == 200
        assert len(sim.requests) == 2
