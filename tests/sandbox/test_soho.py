"""The Soho simulator against the documented API (seed 004), over real HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from pipeline.sandbox import RunningSimulator, SohoSimulator, serve

from .conftest import soho_headers

NOT_AUTHENTICATED = {
    "status": "error",
    "errors": [
        {
            "error": "not_authenticated",
            "message": "not authenticated",
            "path": "request",
            "type": "custom",
        }
    ],
    "payload": {},
}
MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ENVELOPE_KEYS = ["current_page", "limit_value", "next_page", "prev_page", "total_pages", "records"]


async def get_json(
    http: aiohttp.ClientSession, running: RunningSimulator, path: str, **params: Any
) -> tuple[int, Any]:
    async with http.get(
        f"{running.url}{path}", headers=soho_headers(running), params=params or None
    ) as response:
        return response.status, await response.json()


def sim_of(running: RunningSimulator) -> SohoSimulator:
    assert isinstance(running.sim, SohoSimulator)
    return running.sim


# --------------------------------------------------------------------------- auth


async def test_ping_needs_no_auth(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    async with http.get(f"{soho.url}/api/v1/ping") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.json() == {}


async def test_me_with_token(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    status, body = await get_json(http, soho, "/api/v1/me")
    assert status == 200
    assert list(body) == ["id", "name", "domain", "created_at"]
    assert body["id"] == 9
    assert MS_Z.match(body["created_at"])


@pytest.mark.parametrize(
    "authorization",
    [None, "wrong_token", "Bearer wrong", "bearer {token}", "{token}", "Token {token}"],
)
async def test_bad_auth_gets_documented_401(
    http: aiohttp.ClientSession, soho: RunningSimulator, authorization: str | None
) -> None:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=sim_of(soho).token)
    for path in ("/api/v1/me", "/api/v1/customers", "/api/v1/customers/5"):
        async with http.get(f"{soho.url}{path}", headers=headers) as response:
            assert response.status == 401
            assert response.headers["Content-Type"] == "application/json; charset=utf-8"
            assert await response.json() == NOT_AUTHENTICATED


def test_default_token_is_32_lowercase_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", SohoSimulator(customers=0).token)


# --------------------------------------------------------------------------- paging


async def test_list_envelope(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    status, body = await get_json(http, soho, "/api/v1/customers", page=1, per=5)
    assert status == 200
    assert list(body) == ENVELOPE_KEYS
    assert body["current_page"] == 1
    assert body["limit_value"] == 5
    assert body["next_page"] == 2
    assert body["prev_page"] is None
    assert body["total_pages"] == 12  # 60 customers
    assert body["records"] == sim_of(soho).truth()[:5]


async def test_middle_and_last_page(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    _, middle = await get_json(http, soho, "/api/v1/customers", page=3, per=25)
    assert (middle["current_page"], middle["next_page"], middle["prev_page"]) == (3, None, 2)
    assert middle["total_pages"] == 3
    assert len(middle["records"]) == 10
    _, second = await get_json(http, soho, "/api/v1/customers", page=2, per=25)
    assert (second["next_page"], second["prev_page"]) == (3, 1)


async def test_per_above_25_is_clamped(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    _, body = await get_json(http, soho, "/api/v1/customers", page=1, per=100)
    assert body["limit_value"] == 25
    assert len(body["records"]) == 25
    assert body["total_pages"] == 3


async def test_defaults_and_kaminari_parsing(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    _, plain = await get_json(http, soho, "/api/v1/customers")
    assert (plain["current_page"], plain["limit_value"]) == (1, 25)
    _, junk = await get_json(http, soho, "/api/v1/customers", page="abc", per="xyz")
    assert (junk["current_page"], junk["limit_value"]) == (1, 25)
    _, below = await get_json(http, soho, "/api/v1/customers", page=-4, per=-3)
    assert (below["current_page"], below["limit_value"]) == (1, 25)
    _, to_i = await get_json(http, soho, "/api/v1/customers", page="2abc", per="7x")
    assert (to_i["current_page"], to_i["limit_value"]) == (2, 7)
    status, _ = await get_json(http, soho, "/api/v1/customers", per=0)
    assert status == 500  # Kaminari raises ZeroPerPageOperation


async def test_page_past_the_end(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    status, body = await get_json(http, soho, "/api/v1/customers", page=99, per=25)
    assert status == 200
    assert body == {
        "current_page": 99,
        "limit_value": 25,
        "next_page": None,
        "prev_page": None,
        "total_pages": 3,
        "records": [],
    }


async def test_empty_collection(http: aiohttp.ClientSession) -> None:
    sim = SohoSimulator(customers=0)
    async with serve(sim) as running:
        _, body = await get_json(http, running, "/api/v1/customers")
    assert body["total_pages"] == 0
    assert body["records"] == []
    assert body["next_page"] is None


async def test_pages_cover_every_record_once(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    seen: list[int] = []
    page: int | None = 1
    while page is not None:
        _, body = await get_json(http, soho, "/api/v1/customers", page=page, per=7)
        seen += [r["id"] for r in body["records"]]
        page = body["next_page"]
    assert seen == [r["id"] for r in sim_of(soho).truth()]
    assert seen == sorted(seen)


async def test_delete_between_pages_shifts_a_record_to_an_earlier_page(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    sim = sim_of(soho)
    ids = [r["id"] for r in sim.truth()]
    _, first = await get_json(http, soho, "/api/v1/customers", page=1, per=5)
    sim.delete_customer(ids[0])
    _, second = await get_json(http, soho, "/api/v1/customers", page=2, per=5)
    assert [r["id"] for r in first["records"]] == ids[0:5]
    assert [r["id"] for r in second["records"]] == ids[6:11]  # ids[5] moved to page 1: unseen


async def test_insert_between_pages_appears_at_the_end(
    http: aiohttp.ClientSession, soho: RunningSimulator
) -> None:
    sim = sim_of(soho)
    _, before = await get_json(http, soho, "/api/v1/customers", page=12, per=5)
    new = sim.insert_customer()
    _, after = await get_json(http, soho, "/api/v1/customers", page=13, per=5)
    assert before["next_page"] is None
    assert after["total_pages"] == 13
    assert after["records"] == [new]
    assert new["id"] > max(r["id"] for r in before["records"])


async def test_hook_deletes_mid_scan(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = sim_of(soho)
    ids = [r["id"] for r in sim.truth()]

    def delete_before_page_3(s: Any, request: Any) -> None:
        if request.query.get("page") == "3":
            sim.delete_customer(ids[1])

    remove = sim.on_request(delete_before_page_3)
    seen: list[int] = []
    for page in (1, 2, 3, 4):
        _, body = await get_json(http, soho, "/api/v1/customers", page=page, per=5)
        seen += [r["id"] for r in body["records"]]
    remove()
    assert ids[10] not in seen  # shifted onto page 2 after page 2 was read
    assert len(seen) == len(set(seen)) == 20
    assert seen[10:] == ids[11:21]


# --------------------------------------------------------------------------- show


async def test_show_and_404(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    sim = sim_of(soho)
    record = sim.truth()[4]
    status, body = await get_json(http, soho, f"/api/v1/customers/{record['id']}")
    assert (status, body) == (200, record)
    async with http.get(
        f"{soho.url}/api/v1/customers/999999", headers=soho_headers(soho)
    ) as response:
        assert response.status == 404
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.read() == b'"Not found"'
    sim.delete_customer(record["id"])
    status, body = await get_json(http, soho, f"/api/v1/customers/{record['id']}")
    assert (status, body) == (404, "Not found")


# --------------------------------------------------------------------------- records


def test_record_shape_matches_the_seed() -> None:
    sim = SohoSimulator(customers=400, seed=5)
    records = sim.truth()
    profile_keys = (
        "id customer_id organisation_id title first_name last_name birth_date phone city street"
        " building building_addon postal_code language created_at updated_at"
    ).split()
    for record in records:
        assert list(record) == ["id", "email", "created_at", "updated_at", "profile"]
        profile = record["profile"]
        assert list(profile) == [k for k in profile_keys if k in profile]
        assert profile["customer_id"] == record["id"] != profile["id"]
        assert profile["organisation_id"] == 9
        assert profile["language"] in ("nl", "fr", "en")
        assert re.fullmatch(r"\+32\d{8,9}", profile["phone"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", profile["birth_date"])
        for stamp in (record["created_at"], record["updated_at"], profile["created_at"]):
            assert MS_Z.match(stamp)
        assert record["created_at"] < profile["created_at"] <= profile["updated_at"]
        assert record["created_at"] <= record["updated_at"]
        assert record["updated_at"] < "2024-01-01"
    addon_absent = sum("building_addon" not in r["profile"] for r in records)
    assert 0.15 * len(records) < addon_absent < 0.45 * len(records)
    assert any(r["profile"]["postal_code"].startswith("0") for r in records)
    assert all(isinstance(r["profile"]["postal_code"], str) for r in records)
    created = [r["created_at"] for r in records]
    assert created == sorted(created)  # increasing with id
    assert len({r["email"] for r in records}) == len(records)


def test_same_seed_same_data() -> None:
    def data(seed: int) -> list[dict[str, Any]]:
        return SohoSimulator(customers=50, seed=seed).truth()

    assert data(11) == data(11)
    assert data(11) != data(12)


def test_updates_bump_the_right_timestamps() -> None:
    at = datetime(2025, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    sim = SohoSimulator(customers=5, clock=lambda: at)
    first = sim.truth()[0]
    after_profile = sim.update_customer(first["id"], profile={"city": "Gent"})
    assert after_profile["profile"]["updated_at"] == "2025-03-04T05:06:07.891Z"
    assert after_profile["profile"]["city"] == "Gent"
    assert after_profile["updated_at"] == first["updated_at"]
    later = datetime(2025, 3, 5, tzinfo=UTC)
    after_email = sim.update_customer(first["id"], email="new@example.com", at=later)
    assert after_email["updated_at"] == "2025-03-05T00:00:00.000Z"
    assert sim.get(first["id"]) == after_email

    touching = SohoSimulator(customers=5, clock=lambda: at, profile_edit_touches_customer=True)
    edited = touching.update_customer(touching.truth()[0]["id"], profile={"building_addon": None})
    assert "building_addon" not in edited["profile"]
    assert edited["updated_at"] == edited["profile"]["updated_at"] == "2025-03-04T05:06:07.891Z"


def test_insert_uses_the_clock_and_fresh_ids() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    sim = SohoSimulator(customers=5, clock=lambda: at)
    last = sim.truth()[-1]
    sim.delete_customer(last["id"])
    new = sim.insert_customer(email="x@example.com", profile={"city": "Brugge"})
    assert new["id"] > last["id"]  # ids are never reused
    assert new["profile"]["id"] != new["id"]
    assert new["updated_at"] == "2025-01-02T03:04:05.000Z"
    assert new["created_at"] < new["profile"]["created_at"] < new["updated_at"]
    assert new["profile"]["city"] == "Brugge"
    with pytest.raises(ValueError):
        sim.insert_customer(email="X@example.com")
    with pytest.raises(KeyError):
        sim.delete_customer(last["id"])


def test_mutate_random_is_seeded() -> None:
    import random

    one, two = SohoSimulator(customers=40), SohoSimulator(customers=40)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    r1 = one.mutate_random(0.2, random.Random(4), inserts=3, deletes=2, at=at)
    r2 = two.mutate_random(0.2, random.Random(4), inserts=3, deletes=2, at=at)
    assert r1 == r2
    assert one.truth() == two.truth()
    assert len(r1["updated"]) == 8 and len(one) == 41


# --------------------------------------------------------------------------- create


def create_body(email: str, **profile: Any) -> dict[str, Any]:
    base = {
        "first_name": "Danny",
        "last_name": "Ocean",
        "title": "mr",
        "phone": "+32(0)56/98.01.44",
        "birth_date": "2000-04-06",
        "city": "East Mohammedfort",
        "street": "8132 Kindra Islands",
        "building": "14346",
        "postal_code": "68658-3184",
    }
    base.update(profile)
    return {
        "customer": {
            "email": email,
            "terms_and_conditions": True,
            "privacy_policy": True,
            "registered_from_ip": "108.254.248.163",
            "profile": base,
        }
    }


async def test_create_customer(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    url = f"{soho.url}/api/v1/customers"
    body = create_body("nathalie@abernathy.co", language="fr")
    async with http.post(url, json=body, headers=soho_headers(soho)) as response:
        assert response.status == 200
        record = await response.json()
    assert record["email"] == "nathalie@abernathy.co"
    assert record["profile"]["phone"] == "+3256980144"
    assert record["profile"]["language"] == "fr"
    assert record["profile"]["postal_code"] == "68658-3184"
    assert "building_addon" not in record["profile"]
    assert record["profile"]["organisation_id"] == 9
    assert sim_of(soho).get(record["id"]) == record

    async with http.post(
        url, json=create_body("other@example.com"), headers=soho_headers(soho)
    ) as response:
        assert (await response.json())["profile"]["language"] == "nl"  # documented default

    async with http.post(
        url, json=create_body("Nathalie@abernathy.co"), headers=soho_headers(soho)
    ) as response:
        assert response.status == 422
        assert await response.json() == {
            "errors": [
                {
                    "error": "confirmed_email_has_already_been_taken",
                    "message": "it is already registered",
                    "path": "customer.email",
                    "type": "custom",
                }
            ]
        }


async def test_create_validation(http: aiohttp.ClientSession, soho: RunningSimulator) -> None:
    body = create_body("v@example.com", city="", language="de")
    async with http.post(
        f"{soho.url}/api/v1/customers", json=body, headers=soho_headers(soho)
    ) as response:
        assert response.status == 422
        errors = (await response.json())["errors"]
    assert {e["path"] for e in errors} == {"customer.profile.city", "customer.profile.language"}
    assert all(e["type"] == "params" for e in errors)
