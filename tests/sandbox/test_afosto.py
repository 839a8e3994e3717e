"""The Afosto simulator against the documented API (seed 003, SOURCES.md §1), over real HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.sandbox import AfostoSimulator, HttpError, RunningSimulator, serve
from pipeline.sandbox.afosto import (
    ISSUER,
    READ_SCOPES,
    WRITE_SCOPES,
    TokenError,
    b64url_decode,
    decode_jwt,
    encode_jwt,
)
from pipeline.sandbox.afosto_data import (
    CONTACT_KEYS,
    CONTACT_TIME_KEYS,
    GROUP_KEYS,
    PARCEL_KEYS,
    PRICE_KEYS,
    SHIPMENT_DETAIL_KEYS,
    SHIPMENT_LIST_KEYS,
)

LCS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")
MS_Z_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PLACEHOLDERS = {"string", "boolean", "integer", "number", "object", "string (date-time)"}
LIST_PATHS = {
    "contacts": "/rel/contacts",
    "shipments": "/lcs/shipments",
    "parcels": "/lcs/parcels",
    "groups": "/cat/groups",
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def afosto() -> AsyncIterator[RunningSimulator]:
    sim = AfostoSimulator(contacts=40, shipments=60, groups=3, prices_per_group=20, seed=4)
    async with serve(sim) as running:
        yield running


def sim_of(running: RunningSimulator) -> AfostoSimulator:
    assert isinstance(running.sim, AfostoSimulator)
    return running.sim


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


async def call(
    http: aiohttp.ClientSession,
    running: RunningSimulator,
    method: str,
    path: str,
    *,
    token: str | None = None,
    page: int | str | None = None,
    size: int | str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """`(status, headers, parsed JSON or None)` of one request; the default token reads."""
    sent = dict(headers) if headers is not None else auth(token or sim_of(running).token)
    if page is not None:
        sent["x-page"] = str(page)
    if size is not None:
        sent["x-page-size"] = str(size)
    kwargs: dict[str, Any] = {"headers": sent, "params": params}
    if body is not None:
        kwargs["data"] = orjson.dumps(body)
        sent["Content-Type"] = "application/json"
    async with http.request(method, f"{running.url}{path}", **kwargs) as response:
        raw = await response.read()
        return response.status, response.headers, orjson.loads(raw) if raw else None


async def walk(
    http: aiohttp.ClientSession,
    running: RunningSimulator,
    path: str,
    size: int,
    method: str = "GET",
    body: Any = None,
) -> list[dict[str, Any]]:
    """Every page until an empty one, as the docs advise (SOURCES §1.2)."""
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        status, headers, chunk = await call(
            http, running, method, path, page=page, size=size, body=body
        )
        assert status == 200 and headers["x-page"] == str(page)
        if not chunk:
            return records
        records += chunk
        page += 1


def assert_afosto_error(status: int, body: Any, expected: int) -> None:
    assert status == expected
    assert set(body) == {"code", "message", "reference", "errors"}
    assert body["code"] == expected
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["reference"], str) and body["reference"]
    assert isinstance(body["errors"], dict)


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}.{index}")
    else:
        yield path, value


# --------------------------------------------------------------------------- auth


async def test_missing_malformed_forged_and_expired_tokens_are_401(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    forged = encode_jwt(orjson.loads(b64url_decode(sim.token.split(".")[1])), "another-secret")
    expired = sim.issue_token(READ_SCOPES, expires_in=-5)
    cases = {
        "none": {},
        "scheme": {"Authorization": f"Token {sim.token}"},
        "garbage": auth("not.a.jwt"),
        "two parts": auth("abc.def"),
        "forged": auth(forged),
        "tampered": auth(sim.token + "!"),
        "expired": auth(expired),
    }
    for name, headers in cases.items():
        status, response_headers, body = await call(
            http, afosto, "GET", "/lcs/shipments", headers=headers
        )
        assert_afosto_error(status, body, 401)
        assert body["errors"] == {}, name
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
    status, _, body = await call(http, afosto, "GET", "/lcs/shipments", headers=auth(expired))
    assert body["message"] == "Token expired"
    status, _, body = await call(http, afosto, "GET", "/lcs/shipments", headers=auth(forged))
    assert body["message"] == "Invalid token signature"


async def test_expiry_follows_the_simulator_clock(http: aiohttp.ClientSession) -> None:
    now = [datetime(2025, 1, 1, tzinfo=UTC)]
    sim = AfostoSimulator(contacts=2, shipments=2, clock=lambda: now[0])
    token = sim.issue_token(READ_SCOPES, expires_in=60)
    async with serve(sim) as running:
        assert (await call(http, running, "GET", "/lcs/parcels", token=token))[0] == 200
        now[0] += timedelta(seconds=61)
        assert (await call(http, running, "GET", "/lcs/parcels", token=token))[0] == 401
        assert (await call(http, running, "GET", "/lcs/parcels"))[0] == 200  # sim.token


def test_tokens_are_hs256_jwts_with_the_documented_claims() -> None:
    sim = AfostoSimulator(contacts=1, shipments=1, jwt_secret="s3cret")
    header = orjson.loads(b64url_decode(sim.token.split(".")[0]))
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = decode_jwt(sim.token, "s3cret", now=time.time())
    assert claims["iss"] == ISSUER == "https://afosto.sandbox"
    assert claims["tenant"] == sim.tenant and claims["sub"] == sim.subject
    assert set(claims["scope"].split()) == set(READ_SCOPES)
    assert claims["exp"] > claims["iat"]
    with pytest.raises(TokenError, match="base64url"):
        decode_jwt(sim.token.replace(".", ".\u00e9", 1), "s3cret", now=time.time())
    write = decode_jwt(sim.write_token, "s3cret", now=time.time())
    assert set(write["scope"].split()) == set(READ_SCOPES + WRITE_SCOPES)


async def test_missing_scope_is_403_naming_it(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    contacts_only = sim.issue_token(["rel:contacts:read"])
    status, _, body = await call(http, afosto, "GET", "/lcs/shipments", token=contacts_only)
    assert_afosto_error(status, body, 403)
    assert body["message"] == (
        "This token lacks the scope lcs:shipments:read required for GET /lcs/shipments"
    )
    status, _, body = await call(
        http, afosto, "POST", "/lcs/search/shipments", token=contacts_only, body={}
    )
    assert status == 403 and "POST /lcs/search/shipments" in body["message"]
    status, _, body = await call(http, afosto, "GET", "/cat/groups", token=contacts_only)
    assert status == 403 and "cat:prices:read" in body["message"]
    status, _, body = await call(http, afosto, "GET", "/lcs/parcels", token=contacts_only)
    assert status == 403
    assert "lcs:handling:read or lcs:shipments:read" in body["message"]
    no_scope = sim.issue_token([])
    status, _, body = await call(http, afosto, "GET", "/rel/contacts", token=no_scope)
    assert status == 403 and "rel:contacts:read" in body["message"]


async def test_parcels_accept_either_scope(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    for scope in ("lcs:handling:read", "lcs:shipments:read"):
        token = sim.issue_token([scope])
        assert (await call(http, afosto, "GET", "/lcs/parcels", token=token))[0] == 200
        parcel_id = sim.ids("parcels")[0]
        assert (await call(http, afosto, "GET", f"/lcs/parcels/{parcel_id}", token=token))[0] == 200
        status, _, _ = await call(http, afosto, "POST", "/lcs/search/parcels", token=token, body={})
        assert status == 200
    handling = sim.issue_token(["lcs:handling:read"])
    assert (await call(http, afosto, "GET", "/lcs/shipments", token=handling))[0] == 403


async def test_writes_need_write_scopes(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    shipment_id = sim.ids("shipments")[0]
    status, _, body = await call(http, afosto, "DELETE", f"/lcs/shipments/{shipment_id}")
    assert status == 403 and "lcs:shipments:write" in body["message"]
    status, _, body = await call(
        http, afosto, "DELETE", f"/lcs/shipments/{shipment_id}", token=sim.write_token
    )
    assert (status, body) == (204, None)
    assert sim.detail("shipments", shipment_id) is None


# --------------------------------------------------------------------------- paging


async def test_default_page_and_headers(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    status, headers, body = await call(http, afosto, "GET", "/lcs/shipments")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, list)  # a bare array, no envelope
    assert headers["x-page"] == "1" and headers["x-count"] == "60"
    assert body == sim.truth("shipments")[:25]  # default page size 25


@pytest.mark.parametrize("resource", ["contacts", "shipments", "parcels", "groups"])
async def test_explicit_pages(
    http: aiohttp.ClientSession, afosto: RunningSimulator, resource: str
) -> None:
    sim = sim_of(afosto)
    truth = sim.truth(resource)
    status, headers, body = await call(http, afosto, "GET", LIST_PATHS[resource], page=2, size=2)
    assert status == 200 and headers["x-page"] == "2"
    assert body == truth[2:4]
    if resource == "contacts":
        assert "x-count" not in headers  # only x-page is declared (003:4987)
    else:
        assert headers["x-count"] == str(len(truth))


async def test_page_size_is_clamped_silently(http: aiohttp.ClientSession) -> None:
    sim = AfostoSimulator(contacts=30, shipments=30, parcels=30, max_page_size=12)
    async with serve(sim) as running:
        for path in ("/rel/contacts", "/lcs/shipments", "/lcs/parcels"):
            status, _, body = await call(http, running, "GET", path, size=100)
            assert status == 200 and len(body) == 12
        _, _, second = await call(http, running, "GET", "/lcs/parcels", page=2, size=100)
        assert second == sim.truth("parcels")[12:24]


async def test_bad_paging_headers_mean_the_defaults(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    truth = sim_of(afosto).truth("parcels")
    for page, size in (("abc", "xyz"), ("0", "0"), ("-2", "-5"), (" ", "1.5")):
        status, headers, body = await call(
            http, afosto, "GET", "/lcs/parcels", page=page, size=size
        )
        assert status == 200 and headers["x-page"] == "1"
        assert body == truth[:25]


async def test_page_past_the_end_is_an_empty_array(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    for path in ("/rel/contacts", "/lcs/shipments", "/lcs/parcels", "/cat/groups"):
        status, headers, body = await call(http, afosto, "GET", path, page=999, size=25)
        assert (status, body, headers["x-page"]) == (200, [], "999")
    huge = "9" * 30
    status, headers, body = await call(http, afosto, "GET", "/lcs/parcels", page=huge)
    assert (status, body, headers["x-page"]) == (200, [], huge)


@pytest.mark.parametrize("resource", ["contacts", "shipments", "parcels", "groups"])
async def test_walking_every_page_yields_the_truth(
    http: aiohttp.ClientSession, afosto: RunningSimulator, resource: str
) -> None:
    assert await walk(http, afosto, LIST_PATHS[resource], 7) == sim_of(afosto).truth(resource)


async def test_order_is_by_creation_not_update(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    at = datetime(2025, 6, 1, tzinfo=UTC)
    before = {r: sim.ids(r) for r in ("contacts", "shipments", "parcels")}
    sim.update_shipment(before["shipments"][3], at=at, is_editable=True)
    sim.update_parcel(before["parcels"][5], at=at, position="DOCK-9")
    sim.update_contact(before["contacts"][0], email="moved@example.org")
    for resource, ids in before.items():
        walked = await walk(http, afosto, LIST_PATHS[resource], 10)
        assert [r["id"] for r in walked] == ids  # nobody moved
    _, _, page = await call(http, afosto, "GET", "/lcs/shipments", size=5)
    assert page[3]["updated_at"] == "2025-06-01T00:00:00+00:00"
    new = sim.insert_shipment(at=at)
    _, _, last = await call(http, afosto, "GET", "/lcs/shipments", page=61, size=1)
    assert last[0]["id"] == new["id"]  # inserts land at the end


async def test_delete_between_pages_shifts_later_records_forward(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    ids = sim.ids("shipments")

    def delete_before_page_2(s: Any, request: Any) -> None:
        if request.header("x-page") == "2":
            sim.delete_shipment(ids[0])

    remove = sim.on_request(delete_before_page_2)
    try:
        _, _, first = await call(http, afosto, "GET", "/lcs/shipments", page=1, size=10)
        _, headers, second = await call(http, afosto, "GET", "/lcs/shipments", page=2, size=10)
    finally:
        remove()
    assert [r["id"] for r in first] == ids[:10]
    assert [r["id"] for r in second] == ids[11:21]  # ids[10] slid onto page 1: never seen
    assert headers["x-count"] == "59"


# --------------------------------------------------------------------------- search


async def test_contact_search_by_id(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    ids = sim.ids("contacts")
    wanted = [ids[7], ids[2], "no-such-contact"]
    body = {"constraints": [{"key": "id", "operator": "in", "value": wanted}]}
    status, headers, found = await call(http, afosto, "POST", "/rel/contacts", body=body)
    assert status == 200 and headers["x-count"] == "2"
    truth = sim.truth("contacts")
    assert found == [truth[2], truth[7]]  # creation order, not the order asked
    status, _, everything = await call(http, afosto, "POST", "/rel/contacts", size=100, body={})
    assert status == 200 and everything == truth


@pytest.mark.parametrize(
    ("path", "constraint", "errors"),
    [
        (
            "/rel/contacts",
            {"key": "id", "operator": "in", "values": ["x"]},
            {"invalid value": ["constraints.0.values"], "required": ["constraints.0.value"]},
        ),
        (
            "/rel/contacts",
            {"key": "email", "operator": "in", "value": ["a@b.c"]},
            {"invalid value": ["constraints.0.key"]},
        ),
        (
            "/lcs/search/shipments",
            {"key": "ids", "operator": "eq", "value": ["x"]},
            {"invalid value": ["constraints.0.operator"]},
        ),
        (
            "/lcs/search/shipments",
            {"key": "updated_at", "operator": "in", "value": ["2023-01-01"]},
            {"invalid value": ["constraints.0.key"]},
        ),
        (
            "/lcs/search/shipments",
            {"key": "is_outbound", "operator": "in", "value": [True]},
            {"invalid value": ["constraints.0.value"]},
        ),
        (
            "/lcs/search/shipments",
            {"key": "is_outbound", "operator": "in", "value": ["yes"]},
            {"invalid value": ["constraints.0.value"]},
        ),
        (
            "/lcs/search/parcels",
            {"key": "ids", "operator": "in", "value": ["x"]},
            {"invalid value": ["constraints.0.value"], "required": ["constraints.0.values"]},
        ),
        (
            "/lcs/search/parcels",
            {"key": "is_delivered", "values": ["true"]},
            {"required": ["constraints.0.operator"]},
        ),
    ],
)
async def test_search_constraints_are_validated(
    http: aiohttp.ClientSession,
    afosto: RunningSimulator,
    path: str,
    constraint: dict[str, Any],
    errors: dict[str, list[str]],
) -> None:
    status, _, body = await call(http, afosto, "POST", path, body={"constraints": [constraint]})
    assert_afosto_error(status, body, 400)
    assert body["errors"] == errors


async def test_search_body_must_be_json(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    headers = auth(sim_of(afosto).token, **{"Content-Type": "application/json"})
    async with http.post(
        f"{afosto.url}/lcs/search/shipments", data=b"{nope", headers=headers
    ) as response:
        assert_afosto_error(response.status, await response.json(), 400)
    status, _, body = await call(
        http, afosto, "POST", "/lcs/search/parcels", body={"constraints": {"key": "ids"}}
    )
    assert status == 400 and body["errors"] == {"invalid value": ["constraints"]}


async def test_shipment_search(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    truth = sim.truth("shipments")

    async def search(*constraints: dict[str, Any]) -> list[dict[str, Any]]:
        body = {"constraints": list(constraints)}
        return await walk(http, afosto, "/lcs/search/shipments", 10, "POST", body)

    def constraint(key: str, *values: str) -> dict[str, Any]:
        return {"key": key, "operator": "in", "value": list(values)}

    assert await search() == truth  # no constraints: everything
    inbound = await search(constraint("is_outbound", "false"))
    assert inbound == [r for r in truth if not r["is_outbound"]] and inbound
    assert await search(constraint("ids", truth[4]["id"], truth[1]["id"])) == [truth[1], truth[4]]
    assert await search(constraint("secret", truth[9]["secret"])) == [truth[9]]
    location = truth[0]["addressing"]["from"]["entity_id"]
    both = await search(constraint("from_id", location), constraint("to_type", "address"))
    assert both == [
        r
        for r in truth
        if r["addressing"]["from"]["entity_id"] == location
        and r["addressing"]["to"]["entity_type"] == "address"
    ]
    returns = [r for r in truth if r["prior_shipments"]]
    assert returns, "seeded returns reference an earlier shipment"
    prior = returns[0]["prior_shipments"][0]
    assert await search(constraint("prior_ids", prior)) == [
        r for r in truth if prior in r["prior_shipments"]
    ]
    status, headers, _ = await call(
        http,
        afosto,
        "POST",
        "/lcs/search/shipments",
        body={"constraints": [constraint("is_outbound", "FALSE")]},
    )
    assert status == 200 and headers["x-count"] == str(len(inbound))


async def test_parcel_search_uses_values(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    truth = sim.truth("parcels")
    body = {"constraints": [{"key": "is_delivered", "operator": "in", "values": ["true"]}]}
    delivered = await walk(http, afosto, "/lcs/search/parcels", 20, "POST", body)
    assert delivered == [r for r in truth if r["is_delivered"]]
    assert 0 < len(delivered) < len(truth)
    body = {"constraints": [{"key": "ids", "operator": "in", "values": [truth[3]["id"]]}]}
    status, headers, found = await call(http, afosto, "POST", "/lcs/search/parcels", body=body)
    assert (status, headers["x-count"], found) == (200, "1", [truth[3]])


async def test_search_sees_live_data(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    body = {"constraints": [{"key": "is_outbound", "operator": "in", "value": ["false"]}]}
    _, headers, _ = await call(http, afosto, "POST", "/lcs/search/shipments", body=body)
    before = int(headers["x-count"])
    outbound = next(r for r in sim.truth("shipments") if r["is_outbound"])
    sim.update_shipment(outbound["id"], is_outbound=False)
    _, headers, _ = await call(http, afosto, "POST", "/lcs/search/shipments", body=body)
    assert int(headers["x-count"]) == before + 1


# --------------------------------------------------------------------------- details


async def test_shipment_detail(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    listed = sim.truth("shipments")
    with_parcels = next(
        r for r in listed if any(p["shipment_id"] == r["id"] for p in sim.truth("parcels"))
    )
    status, _, detail = await call(http, afosto, "GET", f"/lcs/shipments/{with_parcels['id']}")
    assert status == 200
    assert list(detail) == list(SHIPMENT_DETAIL_KEYS)
    assert {k: detail[k] for k in SHIPMENT_LIST_KEYS} == with_parcels
    assert detail["parcels"] == [
        p for p in sim.truth("parcels") if p["shipment_id"] == with_parcels["id"]
    ]
    assert detail["items"] and all(isinstance(i["service"], list) for i in detail["items"])
    assert detail == sim.detail("shipments", with_parcels["id"])


async def test_parcel_moves_appear_in_shipment_details(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    target = sim.insert_shipment()
    assert target["parcels"] == []
    added = sim.insert_parcel(target["id"])
    moved = sim.update_parcel(sim.ids("parcels")[0], shipment_id=target["id"])
    _, _, detail = await call(http, afosto, "GET", f"/lcs/shipments/{target['id']}")
    assert [p["id"] for p in detail["parcels"]] == [moved["id"], added["id"]]
    sim.delete_shipment(target["id"])
    assert (await call(http, afosto, "GET", f"/lcs/parcels/{added['id']}"))[0] == 200


async def test_contact_detail_and_version(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    contact = sim.truth("contacts")[5]
    path = f"/rel/contacts/{contact['id']}"
    assert (await call(http, afosto, "GET", path))[2] == contact
    status, _, same = await call(http, afosto, "GET", path, params={"version": contact["version"]})
    assert (status, same) == (200, contact)
    updated = sim.update_contact(contact["id"], tags=["vip"])
    assert updated["version"] != contact["version"]
    status, _, body = await call(http, afosto, "GET", path, params={"version": contact["version"]})
    assert_afosto_error(status, body, 404)
    assert (await call(http, afosto, "GET", path))[2]["tags"] == ["vip"]


async def test_404s_and_deletes(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    write = sim.write_token
    for resource, path in (
        ("contacts", "/rel/contacts"),
        ("shipments", "/lcs/shipments"),
        ("parcels", "/lcs/parcels"),
    ):
        record_id = sim.ids(resource)[2]
        assert (await call(http, afosto, "GET", f"{path}/{record_id}"))[0] == 200
        status, _, body = await call(http, afosto, "DELETE", f"{path}/{record_id}", token=write)
        assert (status, body) == (204, None)
        status, _, body = await call(http, afosto, "GET", f"{path}/{record_id}")
        assert_afosto_error(status, body, 404)
        status, _, body = await call(http, afosto, "DELETE", f"{path}/{record_id}", token=write)
        assert_afosto_error(status, body, 404)
        assert record_id not in sim.ids(resource)
        for bogus in ("nope", record_id.upper(), "00000000-0000-4000-8000-000000000000"):
            assert (await call(http, afosto, "GET", f"{path}/{bogus}"))[0] == 404
    status, _, body = await call(http, afosto, "GET", "/cat/groups/nope")
    assert_afosto_error(status, body, 404)
    status, _, body = await call(http, afosto, "GET", "/cat/groups/nope/prices")
    assert_afosto_error(status, body, 404)


async def test_unknown_path_and_wrong_method(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    status, _, body = await call(http, afosto, "GET", "/lcs/nothing")
    assert_afosto_error(status, body, 404)
    status, headers, body = await call(http, afosto, "PATCH", "/lcs/shipments")
    assert_afosto_error(status, body, 405)
    assert "GET" in headers["Allow"]


# --------------------------------------------------------------------------- price groups


async def test_group_soft_delete(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    group = sim.truth("groups")[1]
    prices_before = await walk(http, afosto, f"/cat/groups/{group['id']}/prices", 50)
    status, _, body = await call(http, afosto, "DELETE", f"/cat/groups/{group['id']}")
    assert status == 403 and "cat:prices:write" in body["message"]
    status, _, disabled = await call(
        http, afosto, "DELETE", f"/cat/groups/{group['id']}", token=sim.write_token
    )
    assert status == 200
    assert disabled["id"] == group["id"] and MS_Z_TIME.match(disabled["deleted_at"])
    assert disabled["updated_at"] == disabled["deleted_at"]
    _, headers, listed = await call(http, afosto, "GET", "/cat/groups")
    assert headers["x-count"] == "3" and listed[1] == disabled  # still listed
    assert (await call(http, afosto, "GET", f"/cat/groups/{group['id']}"))[2] == disabled
    assert await walk(http, afosto, f"/cat/groups/{group['id']}/prices", 50) == prices_before
    _, _, again = await call(
        http, afosto, "DELETE", f"/cat/groups/{group['id']}", token=sim.write_token
    )
    assert again == disabled  # disabling twice changes nothing


async def test_price_pages_and_vat_filter(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    group = sim.truth("groups")[0]
    truth = [p for p in sim.truth("prices") if p["price_group_id"] == group["id"]]
    path = f"/cat/groups/{group['id']}/prices"
    status, headers, first = await call(http, afosto, "GET", path, size=5)
    assert status == 200 and headers["x-count"] == "20" and first == truth[:5]
    assert await walk(http, afosto, path, 6) == truth
    _, _, florida = await call(
        http,
        afosto,
        "GET",
        path,
        size=50,
        params={"country": "US", "administrative_area": "Florida"},
    )
    assert [p["id"] for p in florida] == [p["id"] for p in truth]  # prices are not filtered
    lines = [line for p in florida for line in p["vat"]]
    assert all(
        line["country"] == "US" and line["administrative_area"] == "Florida" for line in lines
    )
    assert len(lines) == sum(
        1 for p in truth for v in p["vat"] if v["administrative_area"] == "Florida"
    )
    _, _, unfiltered = await call(http, afosto, "GET", path, size=50, params={"country": ""})
    assert unfiltered == truth
    _, _, dutch = await call(http, afosto, "GET", path, size=50, params={"country": "nl"})
    assert all([line["country"] for line in p["vat"]] == ["NL"] for p in dutch)
    assert sim.truth("prices")[0]["vat"] != dutch[0]["vat"]  # the stored lines are untouched


async def test_put_prices_upserts_in_place(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    now = datetime(2025, 2, 3, 4, 5, 6, 789_000, tzinfo=UTC)
    sim = AfostoSimulator(contacts=1, shipments=1, groups=2, prices_per_group=8, clock=lambda: now)
    group_id = sim.ids("groups")[0]
    path = f"/cat/groups/{group_id}/prices"
    async with serve(sim) as running:
        before = await walk(http, running, path, 50)
        target = before[2]
        row = {
            "sku": target["sku"],
            "amount": 1234,
            "original_amount": 1500,
            "active_at": target["active_at"].replace(".000Z", "+00:00"),
        }
        status, _, body = await call(http, running, "PUT", path, token=sim.write_token, body=[row])
        assert (status, body) == (200, {"success": 1})
        after = await walk(http, running, path, 50)
        assert len(after) == len(before)
        edited = after[2]
        assert edited["id"] == target["id"] and edited["created_at"] == target["created_at"]
        assert (edited["amount"], edited["original_amount"]) == (1234, 1500)
        assert edited["vat"] == target["vat"]
        planned = dict(row, active_at="2030-01-01T00:00:00Z")
        new = {"sku": "NEW-1", "amount": 999}
        status, _, _ = await call(
            http, running, "PUT", path, token=sim.write_token, body=[planned, new]
        )
        assert status == 200
        _, headers, grown = await call(http, running, "GET", path, size=50)
        assert headers["x-count"] == str(len(before) + 2)
        assert grown[:-2] == after
        added_planned, added_new = grown[-2:]
        assert added_planned["active_at"] == "2030-01-01T00:00:00.000Z"
        assert added_planned["created_at"] == "2025-02-03T04:05:06.789Z"
        assert added_planned["vat"] == target["vat"]  # copied from the sku's other prices
        assert added_new["original_amount"] == 999
        assert added_new["active_at"] == added_new["created_at"]
        assert UUID.match(added_new["id"]) and added_new["price_group_id"] == group_id
        assert "updated_at" not in added_new


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"sku": "A"}, {"invalid value": ["body"]}),
        ([{"sku": "A"}], {"required": ["0.amount"]}),
        ([{"amount": 5}], {"required": ["0.sku"]}),
        ([{"sku": "A", "amount": "5"}], {"invalid value": ["0.amount"]}),
        ([{"sku": "A", "amount": 5, "active_at": "tomorrow"}], {"invalid value": ["0.active_at"]}),
        ([{"sku": "A", "amount": 5}, {"sku": "B", "amount": 1.5}], {"invalid value": ["1.amount"]}),
    ],
)
async def test_put_prices_validation(
    http: aiohttp.ClientSession,
    afosto: RunningSimulator,
    body: Any,
    errors: dict[str, list[str]],
) -> None:
    sim = sim_of(afosto)
    count = sim.count("prices")
    path = f"/cat/groups/{sim.ids('groups')[0]}/prices"
    status, _, answer = await call(http, afosto, "PUT", path, token=sim.write_token, body=body)
    assert_afosto_error(status, answer, 400)
    assert answer["errors"] == errors
    assert sim.count("prices") == count  # all or nothing


def test_python_price_api() -> None:
    sim = AfostoSimulator(contacts=1, shipments=1, groups=1, prices_per_group=5)
    price = sim.truth("prices")[0]
    changed = sim.set_vat(price["id"], [{"rate": 0, "country": "NL", "administrative_area": ""}])
    assert changed["created_at"] == price["created_at"] and changed["vat"][0]["rate"] == 0
    again = sim.upsert_price(
        price["price_group_id"], price["sku"], 42, active_at=price["active_at"]
    )
    assert again["id"] == price["id"] and again["vat"] == changed["vat"]
    sim.delete_price(price["id"])
    assert sim.count("prices") == 4 and sim.detail("prices", price["id"]) is None
    group = sim.insert_group(name="Pop-up", at=datetime(2025, 1, 1, tzinfo=UTC))
    assert group["created_at"] == "2025-01-01T00:00:00.000Z" and group["deleted_at"] is None
    assert sim.truth("groups")[-1] == group


# --------------------------------------------------------------------------- records


def check_record_shapes(sim: AfostoSimulator) -> None:
    records = {resource: sim.truth(resource) for resource in LIST_PATHS}
    records["prices"] = sim.truth("prices")
    records["details"] = [sim.detail("shipments", i) or {} for i in sim.ids("shipments")]
    timestamp_fields = 0
    for resource, rows in records.items():
        assert rows, resource
        for row in rows:
            for path, value in leaves(row):
                assert value not in PLACEHOLDERS, (resource, path, value)
                assert not (isinstance(value, str) and value.startswith("#/definitions")), path
                name = path.rsplit(".", 1)[-1]
                if name.endswith("_at") and value is not None:
                    timestamp_fields += 1
                    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                    assert parsed.tzinfo is not None
                    lcs = resource in ("shipments", "parcels", "details")
                    assert (LCS_TIME if lcs else MS_Z_TIME).match(value), (path, value)
    assert timestamp_fields > 100
    times = CONTACT_TIME_KEYS if sim.contacts_have_updated_at else ()
    for contact in records["contacts"]:
        assert list(contact) == [*CONTACT_KEYS, *times]
        assert UUID.match(contact["id"]) and isinstance(contact["is_guest"], bool)
        for place in ("billing", "shipping"):
            address = contact[place]["primary"]
            assert isinstance(address["premise_number"], int)
            assert isinstance(address["geo_location"]["lat"], float)
            assert set(address["geo_location"]["box"]["south_west"]) == {"lat", "long"}
        org = contact["organisations"]["primary"]
        assert isinstance(org["payment_settings"]["post_payment"]["spending_limit"], int)
        assert isinstance(org["registrations"], list)
    for shipment in records["shipments"]:
        assert list(shipment) == list(SHIPMENT_LIST_KEYS)
        assert shipment["type"] in ("delivery", "collect", "internal")
        assert re.fullmatch(r"SHP-\d+", shipment["number"])
        assert UUID.match(shipment["channel_id"]) and shipment["created_at"] < "2024-01-01"
        assert shipment["created_at"] <= shipment["updated_at"]
        for end in ("to", "from"):
            assert shipment["addressing"][end]["entity_type"] in ("address", "location")
    contact_ids = set(sim.ids("contacts"))
    assert all(s["contact_id"] in contact_ids for s in records["shipments"])
    shipment_ids = set(sim.ids("shipments"))
    for parcel in records["parcels"]:
        assert list(parcel) == list(PARCEL_KEYS)
        assert parcel["shipment_id"] in shipment_ids
        assert 1 <= len(parcel["items"]) <= 4
        for key in ("weight", "length", "width", "height", "count"):
            assert type(parcel[key]) is int
        assert all(type(item["quantity"]) is int for item in parcel["items"])
        assert (parcel["finished_at"] is None) == (not parcel["is_finished"])
    assert [p["created_at"] for p in records["parcels"]] == sorted(
        p["created_at"] for p in records["parcels"]
    )
    for group in records["groups"]:
        assert list(group) == list(GROUP_KEYS)
    for price in records["prices"]:
        assert list(price) == list(PRICE_KEYS)
        assert type(price["amount"]) is int and type(price["original_amount"]) is int
        assert isinstance(price["vat"], list) and all(type(v["rate"]) is int for v in price["vat"])
    assert any(p["active_at"] > "2024-01-01" for p in records["prices"])  # planned prices


def test_record_shapes() -> None:
    check_record_shapes(AfostoSimulator(contacts=60, shipments=120, seed=7))


def test_contact_timestamps_are_optional() -> None:
    plain = AfostoSimulator(contacts=5, shipments=1)
    assert all("updated_at" not in c for c in plain.truth("contacts"))
    at = datetime(2025, 3, 4, 5, 6, 7, 891_000, tzinfo=UTC)
    timed = AfostoSimulator(contacts=5, shipments=1, contacts_have_updated_at=True)
    contact = timed.truth("contacts")[0]
    assert list(contact)[-3:] == ["created_at", "updated_at", "deleted_at"]
    assert contact["deleted_at"] is None and contact["created_at"] <= contact["updated_at"]
    updated = timed.update_contact(contact["id"], at=at, given_name="Noor")
    assert updated["updated_at"] == "2025-03-04T05:06:07.891Z"
    assert updated["created_at"] == contact["created_at"]
    assert updated["version"] != contact["version"]
    check_record_shapes(AfostoSimulator(contacts=20, shipments=20, contacts_have_updated_at=True))


def test_same_seed_same_data() -> None:
    def snapshot(seed: int) -> dict[str, Any]:
        sim = AfostoSimulator(contacts=15, shipments=20, seed=seed)
        return {r: sim.truth(r) for r in ("contacts", "shipments", "parcels", "groups", "prices")}

    assert snapshot(3) == snapshot(3)
    one, other = snapshot(3), snapshot(4)
    assert all(one[r] != other[r] for r in one)
    assert not set(AfostoSimulator(seed=3).ids("shipments")) & set(
        AfostoSimulator(seed=4).ids("shipments")
    )


def test_parcel_mutations() -> None:
    at = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    sim = AfostoSimulator(contacts=3, shipments=5, clock=lambda: at)
    parcel = sim.truth("parcels")[0]
    changed = sim.set_parcel_items(parcel["id"], [{"sku": "MUG-00001", "quantity": 3}])
    assert changed["updated_at"] == "2025-05-06T07:08:09+00:00"
    assert changed["count"] == 3 and UUID.match(changed["items"][0]["id"])
    assert changed["created_at"] == parcel["created_at"]
    assert sim.truth("parcels")[0] == changed == sim.detail("parcels", parcel["id"])
    with pytest.raises(ValueError):
        sim.update_parcel(parcel["id"], colour="red")
    with pytest.raises(KeyError):
        sim.update_parcel("missing")
    new = sim.insert_parcel()
    assert new["shipment_id"] in sim.ids("shipments") and new["finished_at"] is None
    assert new["created_at"] == new["updated_at"] == "2025-05-06T07:08:09+00:00"
    custom = sim.insert_shipment(id="my-shipment")
    assert sim.detail("shipments", "my-shipment") == custom
    with pytest.raises(ValueError):
        sim.insert_shipment(id="my-shipment")


# --------------------------------------------------------------------------- faults, control


async def test_core_faults_use_the_afosto_body(
    http: aiohttp.ClientSession, afosto: RunningSimulator
) -> None:
    sim = sim_of(afosto)
    sim.faults.add(HttpError(503), times=1, path_prefix="/lcs/")
    status, _, body = await call(http, afosto, "GET", "/lcs/parcels")
    assert_afosto_error(status, body, 503)
    assert body["message"] == "Service Unavailable" and body["errors"] == {}
    status, _, page = await call(http, afosto, "GET", "/lcs/parcels")
    assert status == 200 and page == sim.truth("parcels")[:25]
    sim.faults.add(HttpError(429, retry_after="1"))
    status, headers, body = await call(http, afosto, "GET", "/rel/contacts")
    assert_afosto_error(status, body, 429)
    assert headers["Retry-After"] == "1"
    references = {body["reference"]}
    for _ in range(3):
        references.add((await call(http, afosto, "GET", "/lcs/nowhere"))[2]["reference"])
    assert len(references) == 4  # one per request


async def test_control_routes(http: aiohttp.ClientSession, afosto: RunningSimulator) -> None:
    sim = sim_of(afosto)
    ctl = f"{afosto.url}/_sandbox"
    async with http.get(f"{ctl}/info") as response:
        info = await response.json()
    assert info["token"] == sim.token and info["counts"]["shipments"] == 60
    async with http.get(f"{ctl}/records", params={"resource": "groups"}) as response:
        assert (await response.json())["records"] == sim.truth("groups")
    async with http.get(f"{ctl}/records", params={"resource": "bogus"}) as response:
        assert response.status == 400
    async with http.post(f"{ctl}/token", json={"scopes": ["cat:prices:read"]}) as response:
        token = (await response.json())["token"]
    assert (await call(http, afosto, "GET", "/cat/groups", token=token))[0] == 200
    assert (await call(http, afosto, "GET", "/rel/contacts", token=token))[0] == 403
    shipment_id = sim.ids("shipments")[0]
    mutations: list[dict[str, Any]] = [
        {
            "op": "update_shipment",
            "id": shipment_id,
            "is_canceled": True,
            "at": "2025-01-01T00:00:00Z",
        },
        {"op": "insert_contact", "email": "ctl@example.com"},
        {"op": "insert_parcel", "shipment_id": shipment_id},
        {"op": "upsert_price", "group_id": sim.ids("groups")[0], "sku": "X-1", "amount": 100},
        {"op": "soft_delete_group", "id": sim.ids("groups")[1]},
        {"op": "delete_contact", "id": sim.ids("contacts")[0]},
    ]
    for mutation in mutations:
        async with http.post(f"{ctl}/mutate", json=mutation) as response:
            assert response.status == 200, await response.text()
    async with http.post(f"{ctl}/mutate", json={"op": "delete_parcel", "id": "gone"}) as response:
        assert response.status == 404
    async with http.post(f"{ctl}/mutate", json={"op": "explode"}) as response:
        assert response.status == 400
    shipment = sim.detail("shipments", shipment_id)
    assert shipment is not None and shipment["is_canceled"] is True
    assert shipment["updated_at"] == "2025-01-01T00:00:00+00:00"
    assert len(shipment["parcels"]) >= 1
    assert sim.truth("contacts")[-1]["email"] == "ctl@example.com"
    assert sim.count("contacts") == 40


# --------------------------------------------------------------------------- scale


async def test_200k_shipments_build_and_page_quickly(http: aiohttp.ClientSession) -> None:
    # Bounds catch a quadratic step (minutes at 200k), not a slow machine: CPU seconds of
    # this process (the simulator runs in it), several times what it takes; speed is bench/'s.
    started = time.process_time()
    sim = AfostoSimulator(contacts=20_000, shipments=200_000, parcels=300_000)
    assert time.process_time() - started < 15.0
    async with serve(sim) as running:
        started = time.process_time()
        status, headers, page = await call(
            http, running, "GET", "/lcs/shipments", page=700, size=250
        )
        assert time.process_time() - started < 3.0
        assert status == 200 and headers["x-count"] == "200000" and len(page) == 250
        ids = sim.ids("shipments")
        assert [r["id"] for r in page] == ids[174_750:175_000]
        sim.delete_shipment(ids[0])
        _, headers, page = await call(http, running, "GET", "/lcs/shipments", page=700, size=250)
        assert headers["x-count"] == "199999" and page[0]["id"] == ids[174_751]
        _, headers, parcels = await call(http, running, "GET", "/lcs/parcels", page=1200, size=250)
        assert headers["x-count"] == "300000" and len(parcels) == 250
        assert all(p["shipment_id"] in set(ids) for p in parcels[:5])
