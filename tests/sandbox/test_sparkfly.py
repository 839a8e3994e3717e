"""The Sparkfly simulator against the documented Credentials API (seed 001 + [ext]), over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from pipeline.sandbox import HttpError, RunningSimulator, SparkflySimulator, serve
from pipeline.sandbox.sparkfly import DEFAULT_HISTORY_END

SECONDS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ENVELOPE_KEYS = ["page", "per_page", "total_entries", "total_pages", "credentials"]
# [ext] the create example's key order, then the status fields of the other examples.
RECORD_KEYS = [
    "id",
    "account_id",
    "created_at",
    "updated_at",
    "identifier",
    "member_id",
    "store_id",
    "channel_id",
    "offer_ids",
    "annotations",
    "code_lifetime",
    "supports_barcode",
    "merchant_id",
    "offer_name",
    "merchant_name",
    "location_address",
    "url",
    "status",
    "redeemed_at",
    "voided_at",
]
JSON_UTF8 = "application/json; charset=utf-8"


class Clock:
    """A settable clock for the simulator (token expiry, write timestamps)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def sparkfly() -> AsyncIterator[RunningSimulator]:
    async with serve(SparkflySimulator(credentials=230, seed=4)) as running:
        yield running


def sim_of(running: RunningSimulator) -> SparkflySimulator:
    assert isinstance(running.sim, SparkflySimulator)
    return running.sim


def auth(running: RunningSimulator) -> dict[str, str]:
    token = sim_of(running).token
    assert token is not None
    return {"X-Auth-Token": token}


async def call(
    http: aiohttp.ClientSession,
    running: RunningSimulator,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any, Any]:
    """`(status, headers, parsed body or None)`; authenticated unless `headers` is given."""
    async with http.request(
        method,
        f"{running.url}{path}",
        headers=auth(running) if headers is None else headers,
        params=params,
        json=json,
        data=data,
    ) as response:
        raw = await response.read()
        body = await response.json(content_type=None) if raw else None
        return response.status, response.headers, body


async def get_list(
    http: aiohttp.ClientSession, running: RunningSimulator, **params: Any
) -> dict[str, Any]:
    status, headers, body = await call(
        http, running, "GET", "/v1.0/credentials", params={k: str(v) for k, v in params.items()}
    )
    assert status == 200, body
    assert headers["Content-Type"] == JSON_UTF8
    return body


def unwrap(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [element["credential"] for element in body["credentials"]]


async def scan(
    http: aiohttp.ClientSession, running: RunningSimulator, per_page: int, **filters: Any
) -> list[dict[str, Any]]:
    """What a client reads by walking pages until `page >= total_pages`."""
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await get_list(http, running, page=page, per_page=per_page, **filters)
        records += unwrap(body)
        if page >= body["total_pages"]:
            return records
        page += 1


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("header", [None, "", "wrong", "Bearer {token}", "{token}x"])
async def test_bad_token_gets_401(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator, header: str | None
) -> None:
    token = sim_of(sparkfly).token
    headers = {} if header is None else {"X-Auth-Token": header.format(token=token)}
    for method, path in [
        ("GET", "/v1.0/credentials"),
        ("GET", "/v1.0/credentials/1"),
        ("GET", "/v1.0/credentials/eligible?member_id=1&offer_id=1"),
        ("POST", "/v1.0/credentials"),
        ("DELETE", "/v1.0/credentials/1"),
    ]:
        status, response_headers, body = await call(http, sparkfly, method, path, headers=headers)
        assert status == 401
        assert response_headers["Content-Type"] == JSON_UTF8
        assert list(body) == ["error"] and body["error"]
    assert len(sim_of(sparkfly)) == 230  # nothing was deleted


async def test_auth_exchange_gives_a_fresh_token(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    login = {"X-Auth-Identity": sim.identity, "X-Auth-Key": sim.key}
    status, headers, body = await call(http, sparkfly, "GET", "/auth", headers=login)
    assert (status, body) == (204, None)
    first = headers["X-Auth-Token"]
    assert re.fullmatch(r"[0-9a-f]{64}", first) and first != sim.token
    status, headers, _ = await call(http, sparkfly, "GET", "/auth", headers=login)
    second = headers["X-Auth-Token"]
    assert second != first and sim.auth_count == 2
    for token in (first, second):  # older tokens stay valid
        status, _, body = await call(
            http, sparkfly, "GET", "/v1.0/credentials", headers={"X-Auth-Token": token}
        )
        assert status == 200 and body["total_entries"] == 230


@pytest.mark.parametrize(
    "login",
    [{}, {"X-Auth-Identity": "sandbox-identity"}, {"X-Auth-Identity": "x", "X-Auth-Key": "y"}],
)
async def test_auth_exchange_rejects_bad_credentials(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator, login: dict[str, str]
) -> None:
    status, headers, body = await call(http, sparkfly, "GET", "/auth", headers=login)
    assert status == 401
    assert "X-Auth-Token" not in headers
    assert list(body) == ["error"]


async def test_tokens_expire_after_24_hours_of_clock(http: aiohttp.ClientSession) -> None:
    clock = Clock(datetime(2025, 1, 1, tzinfo=UTC))
    sim = SparkflySimulator(credentials=5, clock=clock)
    async with serve(sim) as running:
        token = sim.issue_token()
        headers = {"X-Auth-Token": token}
        clock.now += timedelta(hours=23, minutes=59)
        assert (await call(http, running, "GET", "/v1.0/credentials", headers=headers))[0] == 200
        clock.now += timedelta(minutes=1)
        status, _, body = await call(http, running, "GET", "/v1.0/credentials", headers=headers)
        assert status == 401 and "error" in body
        # The configured static token does not age.
        assert (await call(http, running, "GET", "/v1.0/credentials"))[0] == 200


async def test_expire_tokens(http: aiohttp.ClientSession, sparkfly: RunningSimulator) -> None:
    sim = sim_of(sparkfly)
    issued = {"X-Auth-Token": sim.issue_token()}
    assert sim.expire_tokens() == 1
    assert (await call(http, sparkfly, "GET", "/v1.0/credentials", headers=issued))[0] == 401
    assert (await call(http, sparkfly, "GET", "/v1.0/credentials"))[0] == 200
    async with http.post(f"{sparkfly.url}/_sandbox/expire_tokens", json={"static": True}) as r:
        assert await r.json() == {"expired": 1}
    assert (await call(http, sparkfly, "GET", "/v1.0/credentials"))[0] == 401


# --------------------------------------------------------------------------- list and paging


async def test_list_envelope_wraps_every_element(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    status, headers, body = await call(http, sparkfly, "GET", "/v1.0/credentials")
    assert status == 200
    assert list(body) == ENVELOPE_KEYS
    assert (body["page"], body["per_page"]) == (1, 50)  # [inferred] defaults
    assert (body["total_entries"], body["total_pages"]) == (230, 5)
    assert len(body["credentials"]) == 50
    for element in body["credentials"]:
        assert list(element) == ["credential", "errors"] and element["errors"] == {}
        assert list(element["credential"]) == RECORD_KEYS
    assert unwrap(body) == sim_of(sparkfly).truth()[:50]
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["X-Request-Id"])
    assert re.fullmatch(r"\d+\.\d{6}", headers["X-Runtime"])


async def test_json_extension_is_the_same_resource(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    _, _, plain = await call(http, sparkfly, "GET", "/v1.0/credentials", params={"page": "2"})
    _, _, dotted = await call(http, sparkfly, "GET", "/v1.0/credentials.json", params={"page": "2"})
    assert plain == dotted
    first_id = plain["credentials"][0]["credential"]["id"]
    _, _, one = await call(http, sparkfly, "GET", f"/v1.0/credentials/{first_id}.json")
    assert one == plain["credentials"][0]


async def test_pages_cover_everything_in_id_order(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    records = await scan(http, sparkfly, per_page=17)
    ids = [r["id"] for r in records]
    assert ids == sorted(ids) and len(set(ids)) == 230
    assert records == sim_of(sparkfly).truth()
    last = await get_list(http, sparkfly, page=14, per_page=17)
    assert last["total_pages"] == 14 and len(last["credentials"]) == 230 - 13 * 17


@pytest.mark.parametrize(
    ("params", "page", "per_page"),
    [
        ({"page": "0"}, 1, 50),
        ({"page": "-3"}, 1, 50),
        ({"page": "abc"}, 1, 50),
        ({"page": "2abc"}, 2, 50),
        ({"per_page": "500"}, 1, 100),  # clamped to max_per_page
        ({"per_page": "0"}, 1, 50),
        ({"per_page": "-1"}, 1, 50),
        ({"per_page": "x"}, 1, 50),
        ({"per_page": "100"}, 1, 100),
        ({"page": "1", "page ": "9", "sort": "updated_at", "since": "2020"}, 1, 50),
    ],
)
async def test_paging_parameters(
    http: aiohttp.ClientSession,
    sparkfly: RunningSimulator,
    params: dict[str, str],
    page: int,
    per_page: int,
) -> None:
    body = await get_list(http, sparkfly, **params)
    assert (body["page"], body["per_page"]) == (page, per_page)
    assert body["total_pages"] == -(-230 // per_page)
    expected = sim_of(sparkfly).truth()[(page - 1) * per_page : page * per_page]
    assert unwrap(body) == expected  # unknown parameters are ignored


async def test_page_past_the_end_is_empty_with_the_same_totals(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    body = await get_list(http, sparkfly, page=99, per_page=50)
    assert body == {
        "page": 99,
        "per_page": 50,
        "total_entries": 230,
        "total_pages": 5,
        "credentials": [],
    }


async def test_empty_account(http: aiohttp.ClientSession) -> None:
    async with serve(SparkflySimulator(credentials=0)) as running:
        body = await get_list(http, running)
    # [ext] the upstream empty-list examples show total_pages 0.
    assert body == {
        "page": 1,
        "per_page": 50,
        "total_entries": 0,
        "total_pages": 0,
        "credentials": [],
    }


# --------------------------------------------------------------------------- filters


async def test_filters_return_proper_subsets(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    everything = sim.truth()
    sample = everything[7]
    for name in ("member_id", "store_id"):
        value = next(r[name] for r in everything if r[name] is not None)
        expected = [r for r in everything if r[name] == value]
        assert 1 <= len(expected) < len(everything)
        assert await scan(http, sparkfly, per_page=10, **{name: value}) == expected
        assert sim.truth(**{name: value}) == expected
    offer_id = sample["offer_ids"][0] if sample["offer_ids"] else 1701
    by_offer = [r for r in everything if offer_id in r["offer_ids"]]
    assert 1 <= len(by_offer) < len(everything)
    assert await scan(http, sparkfly, per_page=10, offer_id=offer_id) == by_offer
    body = await get_list(http, sparkfly, offer_id=offer_id, per_page=10)
    assert body["total_entries"] == len(by_offer)
    assert body["total_pages"] == -(-len(by_offer) // 10)


async def test_combined_filters(http: aiohttp.ClientSession, sparkfly: RunningSimulator) -> None:
    sim = sim_of(sparkfly)
    target = next(r for r in sim.truth() if r["offer_ids"] and r["store_id"] is not None)
    filters = {
        "member_id": target["member_id"],
        "offer_id": target["offer_ids"][0],
        "store_id": target["store_id"],
    }
    expected = [
        r
        for r in sim.truth()
        if r["member_id"] == filters["member_id"]
        and filters["offer_id"] in r["offer_ids"]
        and r["store_id"] == filters["store_id"]
    ]
    assert target in expected
    assert await scan(http, sparkfly, per_page=50, **filters) == expected == sim.truth(**filters)
    assert (await get_list(http, sparkfly, member_id=1, store_id=1))["credentials"] == []


@pytest.mark.parametrize(
    "params", [{"member_id": "abc"}, {"offer_id": "1.5"}, {"store_id": "x1"}, {"store_id": "1,2"}]
)
async def test_non_integer_filter_is_400(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator, params: dict[str, str]
) -> None:
    status, headers, body = await call(http, sparkfly, "GET", "/v1.0/credentials", params=params)
    assert status == 400
    assert headers["Content-Type"] == JSON_UTF8
    assert list(body) == ["error", "message"]
    assert next(iter(params)) in body["message"]


async def test_empty_filter_value_means_no_filter(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    body = await get_list(http, sparkfly, member_id="")
    assert body["total_entries"] == 230


# --------------------------------------------------------------------------- live data


async def test_delete_between_pages_shifts_records_to_earlier_pages(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    """Offset paging over live data: a delete on page 1 makes page 2 skip a record."""
    sim = sim_of(sparkfly)
    ids = sim.ids

    def delete_before_page_2(_: Any, entry: Any) -> None:
        if entry.path == "/v1.0/credentials" and entry.query.get("page") == "2":
            sim.delete(ids[0])

    remove = sim.on_request(delete_before_page_2)
    try:
        first = await get_list(http, sparkfly, page=1, per_page=10)
        second = await get_list(http, sparkfly, page=2, per_page=10)
    finally:
        remove()
    seen = [r["id"] for r in unwrap(first) + unwrap(second)]
    assert seen == ids[:10] + ids[11:21]  # ids[10] moved to page 1 after it was read
    assert second["total_entries"] == 229


async def test_insert_lands_on_the_last_page(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    new = sim.insert()
    assert new["id"] > max(sim.ids[:-1])
    body = await get_list(http, sparkfly, page=5, per_page=50)
    assert unwrap(body)[-1] == new and body["total_entries"] == 231


# --------------------------------------------------------------------------- detail


async def test_detail_and_404(http: aiohttp.ClientSession, sparkfly: RunningSimulator) -> None:
    sim = sim_of(sparkfly)
    record = sim.truth()[3]
    status, headers, body = await call(http, sparkfly, "GET", f"/v1.0/credentials/{record['id']}")
    assert status == 200 and headers["Content-Type"] == JSON_UTF8
    assert body == {"credential": record, "errors": {}}
    missing = max(sim.ids) + 100
    for path in (f"/v1.0/credentials/{missing}", "/v1.0/credentials/abc", "/v1.0/credentials/-1"):
        status, headers, body = await call(http, sparkfly, "GET", path)
        assert status == 404
        assert headers["Content-Type"] == JSON_UTF8
        assert body == {"error": "Credential was not found by id"}


async def test_unknown_route_uses_the_sparkfly_error_shape(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    status, _, body = await call(http, sparkfly, "GET", "/v1.0/nothing")
    assert (status, body) == (404, {"error": "Not Found"})
    status, _, body = await call(http, sparkfly, "PATCH", "/v1.0/credentials/1")
    assert (status, body) == (405, {"error": "Method Not Allowed"})


async def test_eligibility(http: aiohttp.ClientSession, sparkfly: RunningSimulator) -> None:
    sim = sim_of(sparkfly)
    redeemed = next(r for r in sim.truth() if r["status"] == "redeemed")
    path = "/v1.0/credentials/eligible"
    params = {"member_id": str(redeemed["member_id"]), "offer_id": str(redeemed["offer_ids"][0])}
    status, _, body = await call(http, sparkfly, "GET", path, params=params)
    assert (status, body) == (200, {"is_eligible": False, "status": "already_redeemed"})
    params = {"member_id": "999999", "offer_id": str(redeemed["offer_ids"][0])}
    assert (await call(http, sparkfly, "GET", path, params=params))[2] == {
        "is_eligible": True,
        "status": "eligible",
    }
    params = {"member_id": "999999", "offer_id": "5"}
    assert (await call(http, sparkfly, "GET", path, params=params))[2]["is_eligible"] is False
    for bad in ({"member_id": "1"}, {"offer_id": "1"}, {"member_id": "a", "offer_id": "1"}):
        status, _, body = await call(http, sparkfly, "GET", path, params=bad)
        assert status == 400 and list(body) == ["error", "message"]


# --------------------------------------------------------------------------- writes


async def test_create_with_json_body(http: aiohttp.ClientSession) -> None:
    clock = Clock(datetime(2025, 3, 4, 5, 6, 7, 890_000, tzinfo=UTC))
    sim = SparkflySimulator(credentials=20, clock=clock)
    async with serve(sim) as running:
        credential = {"member_id": 1009, "channel_id": 456, "offer_id": 1701, "store_id": 2}
        status, headers, body = await call(
            http, running, "POST", "/v1.0/credentials", json={"credential": credential}
        )
        assert status == 201
        assert list(body) == ["credential", "errors"] and body["errors"] == {}
        created = body["credential"]
        assert list(created) == RECORD_KEYS
        assert created["created_at"] == created["updated_at"] == "2025-03-04T05:06:07Z"
        assert (created["member_id"], created["channel_id"]) == (1009, 456)
        assert (created["offer_ids"], created["store_id"], created["status"]) == ([1701], 2, "open")
        assert created["identifier"] and created["offer_name"] == sim.offers[1701].name
        assert created["merchant_id"] == sim.offers[1701].merchant_id
        assert headers["Location"].endswith(f"/v1.0/credentials/{created['id']}")
        assert headers["ETag"].startswith('W/"')
        assert sim.get(created["id"]) == created
        assert sim.truth()[-1] == created


async def test_create_without_offers_like_the_upstream_example(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    status, _, body = await call(
        http,
        sparkfly,
        "POST",
        "/v1.0/credentials.json",
        params={"member_id": "123", "channel_id": "456"},
    )
    assert status == 201
    created = body["credential"]
    assert created["identifier"] is None and created["offer_ids"] == []
    assert created["annotations"] == {} and created["url"] is None
    assert created["merchant_id"] is None and created["offer_name"] is None
    # [ext] attaching offers later (query string, comma-separated) generates the identifier.
    status, _, body = await call(
        http,
        sparkfly,
        "PUT",
        f"/v1.0/credentials/{created['id']}.json",
        params={"channel_id": "456", "offer_ids": "1701,1702"},
    )
    assert status == 201
    assert body["credential"]["offer_ids"] == [1701, 1702]
    assert body["credential"]["identifier"] and body["credential"]["offer_name"]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"credential": {"member_id": 123}}, {"error": "channel_id is required"}),
        ({"member_id": 123}, {"error": "channel_id is required"}),
        (None, {"error": "channel_id is required"}),
        ({"credential": {"channel_id": 456}}, {"error": "Member can't be blank"}),
    ],
)
async def test_create_validation(
    http: aiohttp.ClientSession,
    sparkfly: RunningSimulator,
    payload: Any,
    error: dict[str, str],
) -> None:
    status, headers, body = await call(http, sparkfly, "POST", "/v1.0/credentials", json=payload)
    assert (status, body) == (400, error)
    assert headers["Content-Type"] == JSON_UTF8
    assert len(sim_of(sparkfly)) == 230


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b'{"credential": {"member_id": "abc", "channel_id": 456}}',
        b'{"credential": {"member_id": 1, "channel_id": 456, "offer_ids": [99]}}',
        b'{"credential": {"member_id": 1, "channel_id": 999}}',
        b'{"credential": {"member_id": 1, "channel_id": 456, "annotations": [1]}}',
    ],
)
async def test_create_rejects_bad_input(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator, payload: bytes
) -> None:
    headers = {**auth(sparkfly), "Content-Type": "application/json"}
    status, _, body = await call(
        http, sparkfly, "POST", "/v1.0/credentials", headers=headers, data=payload
    )
    assert status == 400 and isinstance(body["error"], str)
    assert len(sim_of(sparkfly)) == 230


async def test_update_redeem_void(http: aiohttp.ClientSession) -> None:
    clock = Clock(datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC))
    sim = SparkflySimulator(credentials=40, seed=9, clock=clock)
    open_ids = [r["id"] for r in sim.truth() if r["status"] == "open" and r["offer_ids"]]
    async with serve(sim) as running:
        target = open_ids[0]
        before = sim.get(target)
        assert before is not None
        status, _, body = await call(
            http,
            running,
            "PUT",
            f"/v1.0/credentials/{target}",
            json={"credential": {"annotations": {"source": "pos", "lane": 3}}},
        )
        assert status == 201  # documented: "Successful update" is a 201
        assert body["credential"]["annotations"] == {"source": "pos", "lane": 3}
        assert body["credential"]["updated_at"] == "2025-06-01T12:00:00Z"
        assert body["credential"]["created_at"] == before["created_at"]

        clock.now += timedelta(minutes=5)
        unchanged = {"credential": {"annotations": {"source": "pos", "lane": 3}}}
        _, _, body = await call(http, running, "PUT", f"/v1.0/credentials/{target}", json=unchanged)
        assert body["credential"]["updated_at"] == "2025-06-01T12:00:00Z"  # nothing changed

        status, _, body = await call(http, running, "PUT", f"/v1.0/credentials/{target}/redeem")
        assert status == 201
        redeemed = body["credential"]
        assert redeemed["status"] == "redeemed"
        assert redeemed["redeemed_at"] == redeemed["updated_at"] == "2025-06-01T12:05:00Z"

        clock.now += timedelta(minutes=5)
        status, _, body = await call(http, running, "PUT", f"/v1.0/credentials/{target}/void.json")
        assert status == 201
        voided = body["credential"]
        assert (voided["status"], voided["voided_at"]) == ("voided", "2025-06-01T12:10:00Z")
        assert voided["redeemed_at"] == "2025-06-01T12:05:00Z"
        assert sim.get(target) == voided

        status, _, body = await call(http, running, "PUT", f"/v1.0/credentials/{target}/redeem")
        assert status == 400 and "error" in body
        for path in ("", "/redeem", "/void"):
            status, _, body = await call(http, running, "PUT", f"/v1.0/credentials/99999{path}")
            assert (status, body) == (404, {"error": "Credential was not found by id"})


async def test_delete_returns_the_record(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    record = sim.truth()[10]
    path = f"/v1.0/credentials/{record['id']}"
    status, _, body = await call(http, sparkfly, "DELETE", path)
    assert (status, body) == (200, {"credential": record, "errors": {}})
    assert sim.get(record["id"]) is None and len(sim) == 229
    assert (await call(http, sparkfly, "GET", path))[0] == 404
    assert (await call(http, sparkfly, "DELETE", path))[0] == 404


# --------------------------------------------------------------------------- data


def test_timestamps_are_seconds_with_z_and_end_by_2024() -> None:
    sim = SparkflySimulator(credentials=2000, seed=3)
    end = DEFAULT_HISTORY_END.strftime("%Y-%m-%dT%H:%M:%SZ")
    statuses = set()
    for record in sim.truth():
        statuses.add(record["status"])
        for field in ("created_at", "updated_at", "redeemed_at", "voided_at"):
            value = record[field]
            if value is not None:
                assert SECONDS_Z.match(value), (field, value)
                assert record["created_at"] <= value <= end
        assert (record["redeemed_at"] is not None) == (record["status"] == "redeemed")
        assert (record["voided_at"] is not None) == (record["status"] == "voided")
        assert (record["identifier"] is None) == (record["offer_ids"] == [])
    assert statuses == {"open", "redeemed", "voided"}


def test_record_mix_and_shared_values() -> None:
    records = SparkflySimulator(credentials=2000, seed=5).truth()
    without_offers = sum(1 for r in records if r["identifier"] is None)
    assert 100 < without_offers < 300  # ~10%
    codes = [r["identifier"] for r in records if r["identifier"]]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"SPK-[A-Z2-9]{4}-[A-Z2-9]{4}", c) for c in codes)
    assert {"source": "pos"} in [r["annotations"] for r in records]
    assert len({r["member_id"] for r in records}) < len(records) / 2
    assert len({r["store_id"] for r in records}) < 200
    assert any(len(r["offer_ids"]) > 1 for r in records)
    assert all(isinstance(r["code_lifetime"], int) for r in records if r["offer_ids"])


def test_same_seed_same_data() -> None:
    one, two = SparkflySimulator(seed=11), SparkflySimulator(seed=11)
    assert one.truth() == two.truth()
    assert one.insert(at=datetime(2025, 1, 1, tzinfo=UTC)) == two.insert(
        at=datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert SparkflySimulator(seed=12).truth() != one.truth()


def test_python_api() -> None:
    sim = SparkflySimulator(credentials=10, seed=2)
    copy = sim.truth()[0]
    copy["offer_ids"].append(1)
    copy["annotations"]["x"] = 1
    assert sim.truth()[0] != copy  # truth hands out copies
    made = sim.insert(member_id=42, offer_ids=[], at=datetime(2025, 1, 1, tzinfo=UTC))
    assert (made["identifier"], made["member_id"], made["code_lifetime"]) == (None, 42, None)
    moved = sim.update(made["id"], store_id=1, at=datetime(2025, 2, 1, 10, 30, 15, 999, tzinfo=UTC))
    assert moved["updated_at"] == "2025-02-01T10:30:15Z"
    assert moved["location_address"] == sim.stores[1].address
    with pytest.raises(ValueError):
        sim.redeem(made["id"])  # no offers attached
    with pytest.raises(ValueError):
        sim.insert(id=made["id"])
    with pytest.raises(KeyError):
        sim.update(123_456)
    sim.delete(made["id"])
    with pytest.raises(KeyError):
        sim.delete(made["id"])
    assert len(sim) == 10


async def test_control_routes(http: aiohttp.ClientSession, sparkfly: RunningSimulator) -> None:
    sim = sim_of(sparkfly)
    member_id = sim.truth()[0]["member_id"]
    async with http.get(f"{sparkfly.url}/_sandbox/records", params={"member_id": member_id}) as r:
        body = await r.json()
    assert body["records"] == sim.truth(member_id=member_id) and body["count"] >= 1
    target = sim.ids[0]
    spec = {"op": "update", "id": target, "annotations": {"k": "v"}, "at": "2025-01-02T03:04:05Z"}
    async with http.post(f"{sparkfly.url}/_sandbox/mutate", json=spec) as r:
        assert r.status == 200
        assert (await r.json())["result"]["updated_at"] == "2025-01-02T03:04:05Z"
    spec = {"op": "random", "fraction": 0.1, "inserts": 3, "deletes": 2}
    async with http.post(f"{sparkfly.url}/_sandbox/mutate", json=spec) as r:
        result = (await r.json())["result"]
    assert (len(result["inserted"]), len(result["deleted"])) == (3, 2) and len(sim) == 231
    async with http.get(f"{sparkfly.url}/_sandbox/info") as r:
        info = await r.json()
    assert info["token"] == sim.token and info["identity"] == sim.identity
    assert info["credentials"] == 231


# --------------------------------------------------------------------------- faults


async def test_faults_use_the_sparkfly_error_shape(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    sim.faults.add(HttpError(503), path_prefix="/v1.0/credentials")
    sim.faults.add(HttpError(429, retry_after="2", message="Rate limit exceeded"))
    status, headers, body = await call(http, sparkfly, "GET", "/v1.0/credentials")
    assert (status, body) == (503, {"error": "Service Unavailable"})
    assert headers["Content-Type"] == JSON_UTF8 and "X-Request-Id" in headers
    status, headers, body = await call(http, sparkfly, "GET", "/v1.0/credentials")
    assert (status, body, headers["Retry-After"]) == (429, {"error": "Rate limit exceeded"}, "2")
    assert (await call(http, sparkfly, "GET", "/v1.0/credentials"))[0] == 200


async def test_auth_endpoint_can_fail_too(
    http: aiohttp.ClientSession, sparkfly: RunningSimulator
) -> None:
    sim = sim_of(sparkfly)
    sim.faults.add(HttpError(500), path_prefix="/auth")
    login = {"X-Auth-Identity": sim.identity, "X-Auth-Key": sim.key}
    status, _, body = await call(http, sparkfly, "GET", "/auth", headers=login)
    assert (status, body) == (500, {"error": "Internal Server Error"})
    assert (await call(http, sparkfly, "GET", "/auth", headers=login))[0] == 204


# --------------------------------------------------------------------------- scale


async def test_200k_credentials_build_and_page_quickly(http: aiohttp.ClientSession) -> None:
    # Bounds catch a quadratic step (minutes at 200k), not a slow machine: CPU seconds of
    # this process (the simulator runs in it), several times what it takes; speed is bench/'s.
    started = time.process_time()
    sim = SparkflySimulator(credentials=200_000, seed=1)
    built = time.process_time() - started
    assert len(sim) == 200_000
    async with serve(sim) as running:
        for page in (1, 1000, 2000, 2001):
            body = await get_list(http, running, page=page, per_page=100)
            assert body["total_entries"] == 200_000 and body["total_pages"] == 2000
            assert len(body["credentials"]) == (100 if page <= 2000 else 0)
        first = sim.get(sim.ids[0])
        assert first is not None
        member_id = first["member_id"]
        body = await get_list(http, running, member_id=member_id)
        assert body["total_entries"] >= 1
        sim.delete(sim.ids[5])
        body = await get_list(http, running, page=2000, per_page=100)
        assert body["total_entries"] == 199_999 and len(body["credentials"]) == 99
    elapsed = time.process_time() - started
    assert elapsed < 25, f"built in {built:.2f}s, done in {elapsed:.2f}s"
