"""The Valomnia authorities simulator against the documented API (seed 002), over HTTP."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from pipeline.sandbox import RunningSimulator, ValomniaSimulator, serve
from pipeline.sandbox.valomnia import format_s, parse_filter_date

from .conftest import VALOMNIA_PASSWORD, valomnia_login

UNAUTHORIZED = {
    "error": "unauthorized",
    "error_description": "Full authentication is required to access this resource",
}


def sim_of(running: RunningSimulator) -> ValomniaSimulator:
    assert isinstance(running.sim, ValomniaSimulator)
    return running.sim


async def list_authorities(
    http: aiohttp.ClientSession, running: RunningSimulator, params: Any = None
) -> tuple[int, Any]:
    url = f"{running.url}/api/v2.1/authorities"
    async with http.get(url, params=params) as response:
        return response.status, await response.json()


@pytest.fixture
async def logged_in(http: aiohttp.ClientSession, valomnia: RunningSimulator) -> RunningSimulator:
    await valomnia_login(http, valomnia)
    return valomnia


# --------------------------------------------------------------------------- auth


async def test_login_redirect_sets_session_cookie(
    http: aiohttp.ClientSession, valomnia: RunningSimulator
) -> None:
    form = {"j_username": "etl@example.com", "j_password": VALOMNIA_PASSWORD, "ajax": "true"}
    async with http.post(f"{valomnia.url}/j_spring_security_check", data=form) as response:
        assert response.status == 200
        assert str(response.url).endswith("/login/ajaxSuccess")
        redirect = response.history[0]
        body = await response.json()
    assert redirect.status == 302
    cookie = redirect.headers["Set-Cookie"]
    assert cookie.startswith("JSESSIONID=") and "HttpOnly" in cookie and "Path=/" in cookie
    session_id = redirect.cookies["JSESSIONID"].value
    assert body == {"success": True, "username": "etl@example.com", "token": session_id}
    assert sim_of(valomnia).login_count == 1
    status, listed = await list_authorities(http, valomnia)
    assert status == 200 and listed["paging"]["total"] == 300


async def test_login_without_redirect(http: aiohttp.ClientSession) -> None:
    sim = ValomniaSimulator(authorities=3, password="pw", login_redirect=False)
    async with serve(sim) as running:
        form = {"j_username": "etl@example.com", "j_password": "pw", "ajax": "true"}
        async with http.post(f"{running.url}/j_spring_security_check", data=form) as response:
            assert response.status == 200 and not response.history
            token = (await response.json())["token"]
        # A client may also send the cookie itself, from the token.
        async with aiohttp.ClientSession() as bare:
            url = f"{running.url}/api/v2.1/authorities"
            async with bare.get(url, headers={"Cookie": f"JSESSIONID={token}"}) as response:
                assert response.status == 200


async def test_wrong_credentials(http: aiohttp.ClientSession, valomnia: RunningSimulator) -> None:
    form = {"j_username": "etl@example.com", "j_password": "nope", "ajax": "true"}
    async with http.post(f"{valomnia.url}/j_spring_security_check", data=form) as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"] == "invalid_credentials"
    assert sim_of(valomnia).login_count == 0


async def test_no_session_is_401(http: aiohttp.ClientSession, valomnia: RunningSimulator) -> None:
    status, body = await list_authorities(http, valomnia)
    assert (status, body) == (401, UNAUTHORIZED)
    async with http.get(f"{valomnia.url}/api/v2.1/authorities/1") as response:
        assert response.status == 401
    async with http.get(
        f"{valomnia.url}/api/v2.1/authorities", cookies={"JSESSIONID": "F" * 32}
    ) as response:
        assert response.status == 401


async def test_static_token(http: aiohttp.ClientSession) -> None:
    sim = ValomniaSimulator(authorities=3, api_token="tok")
    async with serve(sim) as running:
        url = f"{running.url}/api/v2.1/authorities"
        async with http.get(url, headers={"Authorization": "Bearer tok"}) as response:
            assert response.status == 200
        async with http.get(url, headers={"Authorization": "Bearer other"}) as response:
            assert response.status == 401


async def test_expired_session_then_relogin(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    sim = sim_of(logged_in)
    assert (await list_authorities(http, logged_in))[0] == 200
    assert sim.expire_sessions() == 1
    assert await list_authorities(http, logged_in) == (401, UNAUTHORIZED)
    await valomnia_login(http, logged_in)
    assert (await list_authorities(http, logged_in))[0] == 200
    assert sim.login_count == 2


async def test_session_ttl_follows_the_clock(http: aiohttp.ClientSession) -> None:
    now = [datetime(2025, 1, 1, tzinfo=UTC)]
    sim = ValomniaSimulator(
        authorities=3, password=VALOMNIA_PASSWORD, session_ttl_seconds=60, clock=lambda: now[0]
    )
    async with serve(sim) as running:
        await valomnia_login(http, running)
        now[0] += timedelta(seconds=59)
        assert (await list_authorities(http, running))[0] == 200  # use renews the session
        now[0] += timedelta(seconds=59)
        assert (await list_authorities(http, running))[0] == 200
        now[0] += timedelta(seconds=61)
        assert (await list_authorities(http, running))[0] == 401


# --------------------------------------------------------------------------- list


async def test_default_page(http: aiohttp.ClientSession, logged_in: RunningSimulator) -> None:
    status, body = await list_authorities(http, logged_in)
    assert status == 200
    assert list(body) == ["paging", "data"]
    paging = body["paging"]
    assert list(paging) == ["total", "max", "offset", "previous", "next"]
    assert (paging["total"], paging["max"], paging["offset"]) == (300, 100, 0)
    assert paging["previous"] is None
    assert paging["next"] == f"{logged_in.url}/api/v2.1/authorities?offset=100"
    truth = sim_of(logged_in).truth()
    assert body["data"] == truth[:100]
    assert list(body["data"][0]) == ["id", "name", "dateCreated", "lastUpdated"]


async def test_next_links_walk_every_record(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    url: str | None = f"{logged_in.url}/api/v2.1/authorities?sort=name&order=desc&max=70"
    seen: list[int] = []
    while url is not None:
        async with http.get(url) as response:
            body = await response.json()
        seen += [r["id"] for r in body["data"]]
        url = body["paging"]["next"]
        if url is not None:
            assert "sort=name" in url and "max=70" in url
    assert sorted(seen) == [r["id"] for r in sim_of(logged_in).truth()]
    assert body["paging"]["previous"].endswith("offset=210")


async def test_offset_past_end_and_clamped_max(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    _, body = await list_authorities(http, logged_in, {"offset": "1000"})
    assert body["data"] == [] and body["paging"]["next"] is None
    assert body["paging"]["total"] == 300
    sim_of(logged_in).max_page_size = 50
    _, body = await list_authorities(http, logged_in, {"max": "5000"})
    assert body["paging"]["max"] == 50 and len(body["data"]) == 50
    _, body = await list_authorities(http, logged_in, {"max": "0"})
    assert body["paging"]["max"] == 50  # max ?: default, then clamped


async def test_unknown_parameters_rejected(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    params = [("dateCreated_gta", "2016-08-15T14:52:48Z"), ("max", "5"), ("page", "2")]
    status, body = await list_authorities(http, logged_in, params)
    assert status == 400
    assert body == {
        "error": "invalid_param",
        "error_description": "The parameters [dateCreated_gta, page] you provided are not "
        "valid for this request.",
    }


@pytest.mark.parametrize(
    "value",
    [
        "2016/08/29",
        "2016-08-15T14:52:48+00:00",
        "2016-08-15T14:52:48.000Z",
        "2016-08-15",
        "2016-13-01T00:00:00Z",
        "",
    ],
)
async def test_bad_date_format(
    http: aiohttp.ClientSession, logged_in: RunningSimulator, value: str
) -> None:
    status, body = await list_authorities(http, logged_in, {"lastUpdated_gte": value})
    assert status == 400
    assert body == {
        "error": "invalid_datetime_format",
        "error_description": f"Invalid datetime filter (not ISO-8601 formatted): [{value}]",
    }


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"max": "ten"}, "invalid_param_type"),
        ({"offset": "1.5"}, "invalid_param_type"),
        ([("max", "5"), ("max", "6")], "invalid_param_type"),
        ({"sort": "email"}, "invalid_param"),
        ({"order": "up"}, "invalid_param"),
    ],
)
async def test_bad_values(
    http: aiohttp.ClientSession, logged_in: RunningSimulator, params: Any, error: str
) -> None:
    status, body = await list_authorities(http, logged_in, params)
    assert status == 400 and body["error"] == error


def tied_second(sim: ValomniaSimulator) -> str:
    counts = Counter(r["lastUpdated"] for r in sim.truth())
    return next(stamp for stamp, n in sorted(counts.items()) if n >= 3)


async def test_gte_inclusive_gt_exclusive(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    sim = sim_of(logged_in)
    stamp = tied_second(sim)
    truth = sim.truth()

    async def ids(params: dict[str, str]) -> list[int]:
        _, body = await list_authorities(http, logged_in, {"max": "1000", **params})
        assert body["paging"]["total"] == len(body["data"])
        return sorted(r["id"] for r in body["data"])

    assert await ids({"lastUpdated_gte": stamp}) == [
        r["id"] for r in truth if r["lastUpdated"] >= stamp
    ]
    assert await ids({"lastUpdated_gt": stamp}) == [
        r["id"] for r in truth if r["lastUpdated"] > stamp
    ]
    assert await ids({"lastUpdated_lte": stamp}) == [
        r["id"] for r in truth if r["lastUpdated"] <= stamp
    ]
    assert await ids({"lastUpdated_lt": stamp}) == [
        r["id"] for r in truth if r["lastUpdated"] < stamp
    ]
    assert await ids({"lastUpdated_gte": stamp, "lastUpdated_lte": stamp}) == [
        r["id"] for r in truth if r["lastUpdated"] == stamp
    ]
    created = truth[len(truth) // 2]["dateCreated"]
    assert await ids({"dateCreated_gte": created, "lastUpdated_gt": stamp}) == [
        r["id"] for r in truth if r["dateCreated"] >= created and r["lastUpdated"] > stamp
    ]


async def test_sort_and_ties(http: aiohttp.ClientSession, logged_in: RunningSimulator) -> None:
    truth = sim_of(logged_in).truth()
    _, asc = await list_authorities(http, logged_in, {"sort": "lastUpdated", "max": "1000"})
    expected = sorted(truth, key=lambda r: (r["lastUpdated"], r["id"]))
    assert asc["data"] == expected
    _, desc = await list_authorities(
        http, logged_in, {"sort": "lastUpdated", "order": "desc", "max": "1000"}
    )
    assert [r["id"] for r in desc["data"]] == [
        r["id"] for r in sorted(truth, key=lambda r: (-parse(r["lastUpdated"]), r["id"]))
    ]
    _, by_id_desc = await list_authorities(http, logged_in, {"order": "DESC", "max": "7"})
    assert [r["id"] for r in by_id_desc["data"]] == [r["id"] for r in truth[::-1][:7]]


def parse(stamp: str) -> int:
    value = parse_filter_date(stamp)
    assert value is not None
    return value


async def test_name_filter(http: aiohttp.ClientSession, logged_in: RunningSimulator) -> None:
    sim = sim_of(logged_in)
    sim.insert("Delivery Man")
    sim.insert("Senior Delivery Man Antwerp")
    _, body = await list_authorities(http, logged_in, {"name": "delivery man", "max": "1000"})
    names = {r["name"] for r in body["data"]}
    assert {"Delivery Man", "Senior Delivery Man Antwerp"} <= names
    assert all("delivery man" in n.lower() for n in names)
    _, body = await list_authorities(http, logged_in, {"name": "delivery*", "max": "1000"})
    assert all(r["name"].lower().startswith("delivery") for r in body["data"])
    assert "Senior Delivery Man Antwerp" not in {r["name"] for r in body["data"]}


# --------------------------------------------------------------------------- single records


async def test_show(http: aiohttp.ClientSession, logged_in: RunningSimulator) -> None:
    record = sim_of(logged_in).truth()[10]
    base = f"{logged_in.url}/api/v2.1/authorities"
    async with http.get(f"{base}/{record['id']}") as response:
        assert (response.status, await response.json()) == (200, record)
    async with http.get(f"{base}/reference/{record['name']}") as response:
        assert (response.status, await response.json()) == (200, record)
    async with http.get(f"{base}/999999") as response:
        assert response.status == 404
        assert await response.json() == {
            "error": "not_found",
            "error_description": "The authority with the id 999999 doesn't exist.",
        }
    async with http.get(f"{base}/abc") as response:
        assert response.status == 400
        assert await response.json() == {
            "error": "invalid_param_type",
            "error_description": "The type of parameter id you provided is not valid for this "
            "request.",
        }


async def test_wrong_version_is_404(
    http: aiohttp.ClientSession, logged_in: RunningSimulator
) -> None:
    for path in ("/api/v1.0/authorities", "/api/v2/authorities/1"):
        async with http.get(f"{logged_in.url}{path}") as response:
            assert response.status == 404
            assert (await response.json())["error"] == "not_found"


async def test_create_update_delete(http: aiohttp.ClientSession) -> None:
    now = [datetime(2025, 6, 1, 12, 0, 0, 750_000, tzinfo=UTC)]
    sim = ValomniaSimulator(authorities=5, password=VALOMNIA_PASSWORD, clock=lambda: now[0])
    async with serve(sim) as running:
        await valomnia_login(http, running)
        base = f"{running.url}/api/v2.1/authorities"
        async with http.post(base, json={"name": "CEO"}) as response:
            assert response.status == 201
            created = await response.json()
        assert created["dateCreated"] == created["lastUpdated"] == "2025-06-01T12:00:00Z"
        async with http.post(base, json={"name": "CEO"}) as response:
            assert (response.status, (await response.json())["error"]) == (400, "already_existing")
        async with http.post(base, json={}) as response:
            assert await response.json() == {
                "error": "missing_param",
                "error_description": "name parameter is missing",
            }
        now[0] += timedelta(minutes=5)
        async with http.put(f"{base}/{created['id']}", json={"name": "Chief"}) as response:
            assert response.status == 200
            updated = await response.json()
        assert updated["lastUpdated"] == "2025-06-01T12:05:00Z"
        assert updated["dateCreated"] == created["dateCreated"]
        async with http.put(f"{base}/reference/Chief", json={"name": "Chief"}) as response:
            assert (await response.json())["lastUpdated"] == "2025-06-01T12:05:00Z"
        async with http.put(f"{base}/424242", json={"name": "X"}) as response:
            assert (response.status, (await response.json())["error"]) == (400, "not_found")
        async with http.delete(f"{base}/reference/Chief") as response:
            assert response.status == 200
            assert await response.json() == {
                "success": "true",
                "success_description": "Instance deleted successfully",
            }
        async with http.delete(f"{base}/{created['id']}") as response:
            assert response.status == 404
        assert sim.get(created["id"]) is None


# --------------------------------------------------------------------------- data


def test_seeded_data_has_ties_and_is_deterministic() -> None:
    one = ValomniaSimulator(authorities=500, seed=9)
    assert one.truth() == ValomniaSimulator(authorities=500, seed=9).truth()
    assert one.truth() != ValomniaSimulator(authorities=500, seed=10).truth()
    truth = one.truth()
    assert len({r["name"] for r in truth}) == len(truth)
    assert all(r["dateCreated"] <= r["lastUpdated"] < "2024-01-01" for r in truth)
    ties = Counter(r["lastUpdated"] for r in truth)
    assert sum(1 for n in ties.values() if n >= 3) >= 3
    assert any(r["dateCreated"] != r["lastUpdated"] for r in truth)
    created = [r["dateCreated"] for r in truth]
    assert created == sorted(created)


def test_indexes_agree_with_a_naive_query_after_mutations() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    sim = ValomniaSimulator(authorities=400, seed=4)
    rng = random.Random(8)
    for step in range(150):
        roll = rng.random()
        ids = [r["id"] for r in sim.truth()]
        moment = at + timedelta(seconds=rng.randrange(0, 30))
        if roll < 0.5:
            sim.update(rng.choice(ids), at=moment)
        elif roll < 0.75:
            sim.insert(at=moment)
        else:
            sim.delete(rng.choice(ids))
        if step % 10:
            continue
        truth = sim.truth()
        stamps = sorted({parse(r["lastUpdated"]) for r in truth})
        for sort in ("id", "name", "lastUpdated", "dateCreated"):
            for order in ("asc", "desc"):
                lo = rng.choice(stamps)
                bounds = {"lastUpdated": (lo, None)}
                total, page = sim.query(bounds=bounds, sort=sort, order=order, offset=3, limit=40)
                expected = naive(truth, lo, sort, order)
                assert total == len(expected)
                assert [r["id"] for r in page] == [r["id"] for r in expected[3:43]]


def naive(truth: list[dict[str, Any]], lo: int, sort: str, order: str) -> list[dict[str, Any]]:
    rows = [r for r in truth if parse(r["lastUpdated"]) >= lo]
    sign = -1 if order == "desc" else 1
    if sort == "id":
        return sorted(rows, key=lambda r: sign * r["id"])
    if sort == "name":
        rows.sort(key=lambda r: (r["name"].lower(), r["id"]), reverse=order == "desc")
        return rows
    return sorted(rows, key=lambda r: (sign * parse(r[sort]), r["id"]))


def test_python_api() -> None:
    sim = ValomniaSimulator(
        authorities=3, clock=lambda: datetime(2025, 2, 3, 4, 5, 6, 999_999, tzinfo=UTC)
    )
    new = sim.insert("Driver")
    assert new["lastUpdated"] == "2025-02-03T04:05:06Z"
    assert sim.by_name("Driver") == new
    moved = sim.update(new["id"], at=datetime(2025, 3, 1, tzinfo=UTC))
    assert moved["lastUpdated"] == format_s(parse("2025-03-01T00:00:00Z"))
    with pytest.raises(ValueError):
        sim.update(sim.truth()[0]["id"], name="Driver")
    sim.delete(new["id"])
    with pytest.raises(KeyError):
        sim.delete(new["id"])
    assert len(sim) == 3


async def test_200k_records_page_quickly(http: aiohttp.ClientSession) -> None:
    # Bounds catch a quadratic step (minutes at 200k), not a slow machine: CPU seconds of
    # this process (the simulator runs in it), several times what it takes; speed is bench/'s.
    started = time.process_time()
    sim = ValomniaSimulator(authorities=200_000, seed=1, password=VALOMNIA_PASSWORD)
    async with serve(sim) as running:
        await valomnia_login(http, running)
        watermark = "2023-06-01T00:00:00Z"
        params = {"lastUpdated_gte": watermark, "sort": "lastUpdated", "order": "asc"}
        _, first = await list_authorities(http, running, {**params, "max": "1000"})
        total = first["paging"]["total"]
        assert total > 10_000 and len(first["data"]) == 1000
        for offset in (1000, total // 2, total - 10):
            _, page = await list_authorities(
                http, running, {**params, "max": "1000", "offset": str(offset)}
            )
            assert page["data"][0]["lastUpdated"] >= watermark
        _, by_id = await list_authorities(
            http, running, {"lastUpdated_gte": watermark, "offset": "5000", "max": "1000"}
        )
        assert by_id["paging"]["total"] == total
    assert time.process_time() - started < 25
