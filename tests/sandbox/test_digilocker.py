"""The DigiLocker Meta APIs simulator against the documented API (seed 000), over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from pipeline.sandbox import DigiLockerSimulator, HttpError, RunningSimulator, serve
from pipeline.sandbox.digilocker import ENDPOINTS, MULTIPART, compute_hmac
from pipeline.sandbox.fakedata import verhoeff_valid

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)  # 17:30 IST
ISSUERS = "/public/oauth2/1/pull/issuers"
DOCTYPE = "/public/oauth2/1/pull/doctype"
PARAMETERS = "/public/oauth2/1/pull/parameters"
COUNTS = "/public/statistics/1/counts"
PUSHURI = "/public/account/1/pushuri"
VERIFY = "/public/account/2/verify"
PREFIX = "One or more of the mandatory parameters is missing or invalid. "
HMAC_MISMATCH = {"error": "hmac_mismatch", "error_description": "HMAC does not match"}
INVALID_TS = {"error": "invalid_ts", "error_description": "Timestamp parameter is invalid"}
INVALID_CLIENT = {
    "error": "invalid_client_id",
    "error_description": "The client_id parameter is invalid",
}
TS_MISSING = {
    "error": "invalid_parameter",
    "error_description": PREFIX + "Timestamp parameter is missing or invalid",
}
HMAC_MISSING = {
    "error": "invalid_parameter",
    "error_description": PREFIX + "HMAC parameter is missing or invalid",
}


def sim_of(running: RunningSimulator) -> DigiLockerSimulator:
    assert isinstance(running.sim, DigiLockerSimulator)
    return running.sim


@pytest.fixture
async def digilocker() -> AsyncIterator[RunningSimulator]:
    async with serve(DigiLockerSimulator(issuers=25, seed=5, clock=lambda: NOW)) as running:
        yield running


def signed(sim: DigiLockerSimulator, ts: str | None = None, **extra: str) -> dict[str, str]:
    """A correctly signed form for the simulator's clock (or for `ts`)."""
    ts = sim.current_ts() if ts is None else ts
    return {"clientid": sim.client_id, "ts": ts, "hmac": sim.sign(ts), **extra}


def encode(fields: dict[str, str], multipart: bool) -> Any:
    if multipart:
        return aiohttp.FormData(fields, default_to_multipart=True)
    return fields  # aiohttp sends a dict as application/x-www-form-urlencoded


async def call(
    http: aiohttp.ClientSession,
    running: RunningSimulator,
    path: str,
    fields: dict[str, str],
    *,
    multipart: bool | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST `fields` in the documented encoding for `path` (or the one forced)."""
    if multipart is None:
        multipart = ENDPOINTS[path.removeprefix("/public")] == MULTIPART
    url = f"{running.url}{path}"
    async with http.post(url, data=encode(fields, multipart), headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        return response.status, orjson.loads(await response.read())


def operation_fields(sim: DigiLockerSimulator, path: str) -> dict[str, str]:
    """Valid non-auth fields for each operation."""
    issuer = sim.truth("issuers")[0]
    doctype = sim.truth("doctypes", orgid=issuer["orgid"])[0]["doctype"]
    account = sim.accounts()[0]
    return {
        ISSUERS: {},
        DOCTYPE: {"orgid": issuer["orgid"]},
        PARAMETERS: {"orgid": issuer["orgid"], "doctype": doctype},
        COUNTS: {},
        PUSHURI: {
            "action": "A",
            "digilockerid": account["digilockerid"],
            "uri": "in.gov.cbse-HSCER-201412345678",
            "docid": "201412345678",
            "issuedate": "15052014",
        },
        VERIFY: {"uid": account["uid"]},
    }[path]


ALL_PATHS = (ISSUERS, DOCTYPE, PARAMETERS, COUNTS, PUSHURI, VERIFY)


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_valid_signature_on_every_endpoint(
    http: aiohttp.ClientSession, digilocker: RunningSimulator, path: str
) -> None:
    sim = sim_of(digilocker)
    status, _ = await call(http, digilocker, path, signed(sim, **operation_fields(sim, path)))
    assert status == 200
    assert sim.requests[-1].method == "POST" and sim.requests[-1].path == path


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_wrong_hmac_on_every_endpoint(
    http: aiohttp.ClientSession, digilocker: RunningSimulator, path: str
) -> None:
    sim = sim_of(digilocker)
    fields = signed(sim, **operation_fields(sim, path))
    fields["hmac"] = sim.sign(str(int(fields["ts"]) - 1))  # signed for another ts
    assert await call(http, digilocker, path, fields) == (401, HMAC_MISMATCH)


async def test_hmac_recipe_is_sha256_of_secret_clientid_ts(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    ts = sim.current_ts()
    digest = hashlib.sha256((sim.client_secret + sim.client_id + ts).encode()).hexdigest()
    assert sim.sign(ts) == digest == compute_hmac(sim.client_secret, sim.client_id, ts)
    fields = {"clientid": sim.client_id, "ts": ts, "hmac": digest.upper()}
    assert (await call(http, digilocker, ISSUERS, fields))[0] == 200  # hex in either case
    # The order matters: clientid + secret + ts is another digest.
    wrong = hashlib.sha256((sim.client_id + sim.client_secret + ts).encode()).hexdigest()
    fields["hmac"] = wrong
    assert await call(http, digilocker, ISSUERS, fields) == (401, HMAC_MISMATCH)


async def test_ts_age_limit(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    now = int(NOW.timestamp())
    assert (await call(http, digilocker, ISSUERS, signed(sim, str(now - 29 * 60))))[0] == 200
    assert (await call(http, digilocker, ISSUERS, signed(sim, str(now - 1800))))[0] == 200
    stale = signed(sim, str(now - 31 * 60))
    assert await call(http, digilocker, ISSUERS, stale) == (401, INVALID_TS)
    # The age follows the simulator clock, not the wall clock.
    sim.clock = lambda: NOW - timedelta(minutes=2)
    assert (await call(http, digilocker, ISSUERS, stale))[0] == 200


async def test_future_ts(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    now = int(NOW.timestamp())
    assert (await call(http, digilocker, ISSUERS, signed(sim, str(now + 299))))[0] == 200
    ahead = signed(sim, str(now + 301))
    assert await call(http, digilocker, ISSUERS, ahead) == (401, INVALID_TS)
    millis = signed(sim, str(now * 1000))  # milliseconds are far in the future
    assert await call(http, digilocker, ISSUERS, millis) == (401, INVALID_TS)


async def test_ist_offset(http: aiohttp.ClientSession) -> None:
    sim = DigiLockerSimulator(issuers=2, clock=lambda: NOW, ts_offset_seconds=19_800)
    async with serve(sim) as running:
        plain = signed(sim, str(int(NOW.timestamp())))
        assert await call(http, running, ISSUERS, plain) == (401, INVALID_TS)
        shifted = signed(sim, str(int(NOW.timestamp()) + 19_800))
        assert sim.current_ts() == shifted["ts"]
        assert (await call(http, running, ISSUERS, shifted))[0] == 200


async def test_unknown_clientid(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    fields = signed(sim)
    fields["clientid"] = "SOMEONE-ELSE"
    fields["hmac"] = compute_hmac(sim.client_secret, "SOMEONE-ELSE", fields["ts"])
    assert await call(http, digilocker, ISSUERS, fields) == (401, INVALID_CLIENT)
    del fields["clientid"]
    assert await call(http, digilocker, ISSUERS, fields) == (401, INVALID_CLIENT)


@pytest.mark.parametrize("ts", [None, "", "abc", "1741608000.5", "-1741608000", "1e9"])
async def test_missing_or_malformed_ts(
    http: aiohttp.ClientSession, digilocker: RunningSimulator, ts: str | None
) -> None:
    fields = signed(sim_of(digilocker))
    if ts is None:
        del fields["ts"]
    else:
        fields["ts"] = ts
    assert await call(http, digilocker, COUNTS, fields) == (400, TS_MISSING)


async def test_missing_hmac(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    fields = signed(sim_of(digilocker))
    del fields["hmac"]
    assert await call(http, digilocker, ISSUERS, fields) == (400, HMAC_MISSING)
    fields["hmac"] = ""
    assert await call(http, digilocker, ISSUERS, fields) == (400, HMAC_MISSING)


async def test_check_order(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    # ts before hmac before clientid before freshness before the digest.
    assert await call(http, digilocker, ISSUERS, {"clientid": "x"}) == (400, TS_MISSING)
    assert await call(http, digilocker, ISSUERS, {"ts": "1"}) == (400, HMAC_MISSING)
    stale = {"clientid": "x", "ts": "1", "hmac": "00"}
    assert await call(http, digilocker, ISSUERS, stale) == (401, INVALID_CLIENT)
    stale["clientid"] = sim.client_id
    assert await call(http, digilocker, ISSUERS, stale) == (401, INVALID_TS)
    # Auth comes before the operation's own parameters.
    bad = {**signed(sim), "hmac": "00", "orgid": "nope"}
    assert await call(http, digilocker, DOCTYPE, bad) == (401, HMAC_MISMATCH)


async def test_base64_hmac_mode(http: aiohttp.ClientSession) -> None:
    sim = DigiLockerSimulator(issuers=2, clock=lambda: NOW, hmac_encoding="base64")
    async with serve(sim) as running:
        ts = sim.current_ts()
        digest = hashlib.sha256((sim.client_secret + sim.client_id + ts).encode()).digest()
        assert sim.sign(ts) == base64.b64encode(digest).decode()
        assert (await call(http, running, ISSUERS, signed(sim)))[0] == 200
        hex_signed = {"clientid": sim.client_id, "ts": ts, "hmac": digest.hex()}
        assert await call(http, running, ISSUERS, hex_signed) == (401, HMAC_MISMATCH)
    with pytest.raises(ValueError):
        DigiLockerSimulator(hmac_encoding="base32")


async def test_hmac_as_a_file_part(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    """The seed types `hmac` as File: a generated client may upload it as a file part."""
    sim = sim_of(digilocker)
    fields = signed(sim)
    form = aiohttp.FormData()
    form.add_field("clientid", fields["clientid"])
    form.add_field("ts", fields["ts"])
    form.add_field("hmac", (fields["hmac"] + "\n").encode(), filename="hmac")
    async with http.post(f"{digilocker.url}{COUNTS}", data=form) as response:
        assert response.status == 200


async def test_bearer_accepted_not_required(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    headers = {"Authorization": "Bearer anything"}
    assert (await call(http, digilocker, ISSUERS, signed(sim), headers=headers))[0] == 200
    sim.access_token = "tok"
    invalid = {"error": "invalid_token", "error_description": "The access token is invalid"}
    assert await call(http, digilocker, ISSUERS, signed(sim)) == (401, invalid)
    headers = {"Authorization": "Bearer tok"}
    assert (await call(http, digilocker, ISSUERS, signed(sim), headers=headers))[0] == 200


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_wrong_encoding_is_415(
    http: aiohttp.ClientSession, digilocker: RunningSimulator, path: str
) -> None:
    sim = sim_of(digilocker)
    documented = ENDPOINTS[path.removeprefix("/public")]
    fields = signed(sim, **operation_fields(sim, path))
    status, body = await call(http, digilocker, path, fields, multipart=documented != MULTIPART)
    assert status == 415
    assert body == {
        "error": "invalid_content_type",
        "error_description": f"The request Content-Type must be {documented}",
    }


async def test_json_body_is_415(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    async with http.post(f"{digilocker.url}{ISSUERS}", json=signed(sim)) as response:
        assert response.status == 415


async def test_lenient_content_type(http: aiohttp.ClientSession) -> None:
    sim = DigiLockerSimulator(issuers=2, clock=lambda: NOW, strict_content_type=False)
    async with serve(sim) as running:
        for multipart in (False, True):
            for path in (ISSUERS, COUNTS):
                status, _ = await call(http, running, path, signed(sim), multipart=multipart)
                assert status == 200


async def test_query_string_is_not_the_form(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    url = f"{digilocker.url}{ISSUERS}"
    async with http.post(url, params=signed(sim), data={"x": "1"}) as response:
        assert response.status == 400


# --------------------------------------------------------------------------- shapes


async def test_issuers_shape(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    status, body = await call(http, digilocker, ISSUERS, signed(sim))
    assert status == 200 and list(body) == ["issuers"]
    issuers = body["issuers"]
    assert len(issuers) == 25 and issuers == sim.truth("issuers")
    for issuer in issuers:
        assert list(issuer) == ["issuerid", "name", "description", "categories", "orgid"]
        assert all(isinstance(v, str) and v for v in issuer.values())
        assert re.fullmatch(r"\d{6}", issuer["orgid"])
        assert re.fullmatch(r"in(\.[a-z0-9]+)+", issuer["issuerid"])
    names = [i["name"] for i in issuers]
    assert "Central Board of Secondary Education" in names
    assert "Ministry of Road Transport and Highways" in names
    assert len(set(names)) == len({i["orgid"] for i in issuers}) == 25
    assert any(i["orgid"].startswith("0") for i in issuers)  # text, not a number
    assert any("," in i["categories"] for i in issuers)


async def test_documents_shape(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    seen: Counter[str] = Counter()
    for issuer in sim.truth("issuers"):
        fields = signed(sim, orgid=issuer["orgid"])
        status, body = await call(http, digilocker, DOCTYPE, fields)
        assert status == 200 and list(body) == ["documents"]
        assert body["documents"] == sim.truth("doctypes", orgid=issuer["orgid"])
        assert 1 <= len(body["documents"]) <= 8
        for document in body["documents"]:
            assert list(document) == ["doctype", "description"]
            assert re.fullmatch(r"[A-Z0-9]{5}", document["doctype"])
            seen[document["doctype"]] += 1
    # Codes repeat across issuers: only (orgid, doctype) is a key.
    assert max(seen.values()) > 1


async def test_parameters_bare_array(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    cbse = next(i for i in sim.truth("issuers") if i["issuerid"] == "in.gov.cbse")
    doctype = sim.truth("doctypes", orgid=cbse["orgid"])[0]["doctype"]
    fields = signed(sim, orgid=cbse["orgid"], doctype=doctype)
    status, body = await call(http, digilocker, PARAMETERS, fields)
    assert status == 200 and isinstance(body, list) and body
    assert body == sim.truth("parameters", orgid=cbse["orgid"], doctype=doctype)
    for param in body:
        assert list(param) == ["paramname", "label", "example", "valuelist"]
    # valuelist is untyped: lists of strings, null and "" all occur.
    kinds = set()
    for row in sim.truth("parameters"):
        value = row["valuelist"]
        kinds.add("list" if isinstance(value, list) else repr(value))
        if isinstance(value, list):
            assert value and all(isinstance(v, str) for v in value)
    assert kinds == {"list", "None", "''"}


async def test_bad_orgid_and_doctype(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    orgid_error = {
        "error": "invalid_parameter",
        "error_description": PREFIX + "The orgid parameter is missing or invalid",
    }
    doctype_error = {
        "error": "invalid_parameter",
        "error_description": PREFIX + "The doctype parameter is missing or invalid",
    }
    orgid = sim.truth("issuers")[0]["orgid"]
    doctype = sim.truth("doctypes", orgid=orgid)[0]["doctype"]
    assert await call(http, digilocker, DOCTYPE, signed(sim)) == (400, orgid_error)
    assert await call(http, digilocker, DOCTYPE, signed(sim, orgid="999x")) == (400, orgid_error)
    # orgid is text: "1891" is not "001891".
    padded = next(i["orgid"] for i in sim.truth("issuers") if i["orgid"].startswith("0"))
    stripped = signed(sim, orgid=str(int(padded)))
    assert await call(http, digilocker, DOCTYPE, stripped) == (400, orgid_error)
    bad_org = signed(sim, orgid="nope", doctype=doctype)
    assert await call(http, digilocker, PARAMETERS, bad_org) == (400, orgid_error)
    for wrong in ("", "ZZZZZ", doctype.lower()):
        fields = signed(sim, orgid=orgid, doctype=wrong)
        assert await call(http, digilocker, PARAMETERS, fields) == (400, doctype_error)


async def test_statistics_shape(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    sim.clock = lambda: datetime(2025, 3, 10, 20, 0, tzinfo=UTC)  # 01:30 on 11 March in IST
    status, body = await call(http, digilocker, COUNTS, signed(sim))
    assert status == 200 and body == sim.statistics()
    for key in ("users", "authentic_documents", "issuers", "requestors"):
        assert isinstance(body[key], str) and re.fullmatch(r"\d+", body[key])
    assert int(body["authentic_documents"]) > 2**31  # does not fit an int32
    assert body["count_as_on"] == "11032025"  # DDMMYYYY, the IST date
    assert "monthwise_registrations" not in body
    monthly = body["monthwise_registations"]  # sic
    assert set(monthly) == {"id", "year", "month", "count", "details2"}
    assert set(monthly["details2"]) == {"id", "year", "month", "count"}
    assert (monthly["details2"]["year"], monthly["details2"]["month"]) == (2025, 3)
    assert (monthly["year"], monthly["month"]) == (2024, 4)
    yearly = body["yearwise_authentic_documents"]
    assert set(yearly) == {"id", "year", "count", "details", "details1", "details2"}
    rows = [yearly, yearly["details"], yearly["details1"], yearly["details2"]]
    assert [r["year"] for r in rows] == [2022, 2023, 2024, 2025]
    for row in rows[1:]:
        assert set(row) == {"id", "year", "count"}
    counts = [r["count"] for r in rows]
    assert counts == sorted(counts) and all(isinstance(c, int) for c in counts)
    assert yearly["details2"]["count"] == int(body["authentic_documents"])
    ids = [r["id"] for r in rows] + [monthly["id"], monthly["details2"]["id"]]
    assert len(set(ids)) == len(ids)


async def test_statistics_change_once_a_day(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    first = await call(http, digilocker, COUNTS, signed(sim))
    sim.clock = lambda: NOW + timedelta(hours=6)  # 23:30 IST, the same day
    assert await call(http, digilocker, COUNTS, signed(sim)) == first
    sim.clock = lambda: NOW + timedelta(days=1)
    status, later = await call(http, digilocker, COUNTS, signed(sim))
    assert status == 200 and later["count_as_on"] == "11032025"
    before = first[1]
    for key in ("users", "authentic_documents"):
        assert int(later[key]) > int(before[key])
    for key in ("issuers", "requestors"):
        assert int(later[key]) >= int(before[key])
    # Never decreasing, over a long stretch, with monthly counts never negative.
    previous = sim.statistics(NOW)
    for day in range(1, 400, 3):
        current = sim.statistics(NOW + timedelta(days=day))
        for key in ("users", "authentic_documents", "issuers", "requestors"):
            assert int(current[key]) >= int(previous[key])
        assert int(current["users"]) > int(previous["users"])
        assert current["monthwise_registations"]["count"] >= 0
        previous = current


# --------------------------------------------------------------------------- mutations


async def test_issuer_changes_are_served(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)

    async def issuers() -> list[dict[str, str]]:
        status, body = await call(http, digilocker, ISSUERS, signed(sim))
        assert status == 200
        return list(body["issuers"])

    added = sim.add_issuer(name="Directorate of Sandbox Records", orgid="000042")
    assert added["orgid"] == "000042" and (await issuers())[-1] == added
    assert sim.truth("doctypes", orgid="000042")
    renamed = sim.rename_issuer("000042", "Sandbox Records Department")
    assert renamed["name"] == "Sandbox Records Department"
    assert (await issuers())[-1]["name"] == "Sandbox Records Department"
    sim.remove_issuer("000042")
    assert all(i["orgid"] != "000042" for i in await issuers())
    status, _ = await call(http, digilocker, DOCTYPE, signed(sim, orgid="000042"))
    assert status == 400
    with pytest.raises(ValueError):
        sim.add_issuer(orgid=sim.truth("issuers")[0]["orgid"])
    with pytest.raises(ValueError):
        sim.add_issuer(issuerid="in.gov.cbse")
    with pytest.raises(KeyError):
        sim.remove_issuer("000042")


async def test_doctype_changes_are_served(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    orgid = sim.truth("issuers")[1]["orgid"]

    async def documents() -> list[dict[str, str]]:
        status, body = await call(http, digilocker, DOCTYPE, signed(sim, orgid=orgid))
        assert status == 200
        return list(body["documents"])

    sim.add_doctype(orgid, "SBXDC", "Sandbox Document")
    assert (await documents())[-1] == {"doctype": "SBXDC", "description": "Sandbox Document"}
    fields = signed(sim, orgid=orgid, doctype="SBXDC")
    status, params = await call(http, digilocker, PARAMETERS, fields)
    assert status == 200 and params
    new_params = [{"paramname": "ref", "label": "Reference", "example": "R1", "valuelist": None}]
    sim.set_parameters(orgid, "SBXDC", new_params)
    assert await call(http, digilocker, PARAMETERS, fields) == (200, new_params)
    sim.remove_doctype(orgid, "SBXDC")
    assert all(d["doctype"] != "SBXDC" for d in await documents())
    assert (await call(http, digilocker, PARAMETERS, fields))[0] == 400
    with pytest.raises(ValueError):
        sim.add_doctype(orgid, "TOOLONG", "x")
    with pytest.raises(KeyError):
        sim.add_doctype("nope", "ABCDE", "x")


async def test_control_routes(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    base = f"{digilocker.url}/_sandbox"
    spec = {"op": "add_issuer", "orgid": "007007", "doctypes": [["ABCDE", "Alpha Document"]]}
    async with http.post(f"{base}/mutate", json=spec) as response:
        assert response.status == 200
        assert (await response.json())["result"]["orgid"] == "007007"
    spec = {"op": "rename_issuer", "orgid": "007007", "name": "Renamed"}
    async with http.post(f"{base}/mutate", json=spec) as response:
        assert (await response.json())["result"]["name"] == "Renamed"
    url = f"{base}/records?resource=doctypes&orgid=007007"
    async with http.get(url) as response:
        body = await response.json()
    assert body == {"count": 1, "records": [{"doctype": "ABCDE", "description": "Alpha Document"}]}
    async with http.get(f"{base}/records?resource=doctypes&orgid=000000") as response:
        assert response.status == 404
    async with http.get(f"{base}/records") as response:
        assert (await response.json())["count"] == 26
    async with http.get(f"{base}/records?resource=statistics") as response:
        assert (await response.json())["records"] == [sim.statistics()]
    async with http.post(f"{base}/mutate", json={"op": "remove_issuer", "orgid": "1"}) as response:
        assert response.status == 404
    async with http.post(f"{base}/mutate", json={"op": "explode"}) as response:
        assert response.status == 400
    async with http.get(f"{base}/info") as response:
        info = await response.json()
    assert info["client_id"] == sim.client_id and info["client_secret"] == sim.client_secret
    assert info["base_path"] == "/public" and info["endpoints"][COUNTS] == MULTIPART


# --------------------------------------------------------------------------- operations


async def test_pushuri(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    mine, other = sim.accounts()[:2]
    push = operation_fields(sim, PUSHURI)
    ok = {"status": "success", "uri": push["uri"]}
    assert await call(http, digilocker, PUSHURI, signed(sim, **push)) == (200, ok)
    assert sim.pushed(mine["digilockerid"])[0]["issuedate"] == "15052014"

    def invalid(text: str) -> tuple[int, dict[str, str]]:
        return 400, {"error": "invalid_parameter", "error_description": PREFIX + text}

    again = await call(http, digilocker, PUSHURI, signed(sim, **push))
    assert again == invalid("URI already exists in this account")
    elsewhere = signed(sim, **{**push, "digilockerid": other["digilockerid"]})
    assert await call(http, digilocker, PUSHURI, elsewhere) == invalid(
        "URI already exists in another account"
    )
    update = {**push, "action": "U", "validfrom": "1062014", "validto": "31122030"}
    assert await call(http, digilocker, PUSHURI, signed(sim, **update)) == (200, ok)
    record = sim.pushed()[0]
    assert (record["validfrom"], record["validto"]) == ("01062014", "31122030")
    delete = {"action": "D", "uri": push["uri"], "digilockerid": mine["digilockerid"]}
    assert await call(http, digilocker, PUSHURI, signed(sim, **delete)) == (200, ok)
    assert sim.pushed() == []
    assert await call(http, digilocker, PUSHURI, signed(sim, **delete)) == invalid(
        "URI parameter is missing or invalid"
    )
    unknown = signed(sim, **{**push, "digilockerid": "123e4567-e89b-12d3-a456-426655440000"})
    assert await call(http, digilocker, PUSHURI, unknown) == (
        404,
        {
            "error": "invalid_digilocker_id",
            "error_description": "The digilockerid parameter is invalid",
        },
    )
    bad_date = signed(sim, **{**push, "issuedate": "31022020"})
    assert await call(http, digilocker, PUSHURI, bad_date) == invalid(
        "Issuedate parameter is missing or invalid"
    )
    no_docid = signed(sim, **{k: v for k, v in push.items() if k != "docid"})
    assert await call(http, digilocker, PUSHURI, no_docid) == invalid(
        "Docid parameter is missing or invalid"
    )


async def test_verify(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    sim = sim_of(digilocker)
    account = sim.accounts()[3]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", account["digilockerid"])
    registered = {"registered": "true", "digilockerid": account["digilockerid"]}
    assert await call(http, digilocker, VERIFY, signed(sim, uid=account["uid"])) == (
        200,
        registered,
    )
    by_mobile = signed(sim, mobile=account["mobile"])
    assert await call(http, digilocker, VERIFY, by_mobile) == (200, registered)
    unknown = signed(sim, mobile="6000000000")
    assert await call(http, digilocker, VERIFY, unknown) == (
        200,
        {"registered": "false", "digilockerid": ""},
    )
    status, body = await call(http, digilocker, VERIFY, signed(sim))
    assert (status, body["error_description"]) == (
        400,
        PREFIX + "Either one of uid or mobile number is mandatory",
    )
    status, body = await call(http, digilocker, VERIFY, signed(sim, uid="12345"))
    assert (status, body["error_description"]) == (
        400,
        PREFIX + "uid parameter is missing or invalid",
    )
    for account in sim.accounts():
        assert verhoeff_valid(account["uid"]) and account["uid"][0] not in "01"
        assert re.fullmatch(r"[6-9]\d{9}", account["mobile"])


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("path", ALL_PATHS)
async def test_get_is_405(
    http: aiohttp.ClientSession, digilocker: RunningSimulator, path: str
) -> None:
    async with http.get(f"{digilocker.url}{path}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert await response.json() == {
            "error": "method_not_allowed",
            "error_description": "Method Not Allowed",
        }


async def test_unknown_path(http: aiohttp.ClientSession, digilocker: RunningSimulator) -> None:
    async with http.post(f"{digilocker.url}/public/oauth2/1/pull/nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"


async def test_faults_use_the_digilocker_error_shape(
    http: aiohttp.ClientSession, digilocker: RunningSimulator
) -> None:
    sim = sim_of(digilocker)
    sim.faults.add(HttpError(500), path_prefix=ISSUERS)
    sim.faults.add(HttpError(503, retry_after="3"), path_prefix=COUNTS)
    unexpected = {"error": "unexpected_error", "error_description": "Internal server error"}
    assert await call(http, digilocker, ISSUERS, signed(sim)) == (500, unexpected)
    assert (await call(http, digilocker, ISSUERS, signed(sim)))[0] == 200
    url = f"{digilocker.url}{COUNTS}"
    async with http.post(url, data=encode(signed(sim), True)) as response:
        assert response.status == 503 and response.headers["Retry-After"] == "3"
        assert await response.json() == unexpected
    sim.rate_limit_per_second = 1
    statuses = [(await call(http, digilocker, ISSUERS, signed(sim)))[0] for _ in range(3)]
    assert 429 in statuses
    sim.rate_limit_per_second = None
    assert sim.requests[-1].fault == "rate_limit"
    body = orjson.loads(sim.error_body(429, "rate limit exceeded"))
    assert body == {"error": "too_many_requests", "error_description": "rate limit exceeded"}


# --------------------------------------------------------------------------- determinism


def test_deterministic_per_seed() -> None:
    def snapshot(seed: int) -> list[Any]:
        sim = DigiLockerSimulator(issuers=40, seed=seed, clock=lambda: NOW)
        sim.add_issuer()
        return [
            sim.truth("issuers"),
            sim.truth("doctypes"),
            sim.truth("parameters"),
            sim.accounts(),
            sim.statistics(),
        ]

    assert snapshot(7) == snapshot(7)
    assert snapshot(7) != snapshot(8)


def test_many_issuers_stay_unique() -> None:
    sim = DigiLockerSimulator(issuers=200, doctypes_per_issuer=(0, 3), seed=3)
    issuers = sim.truth("issuers")
    assert len(issuers) == 200
    for field in ("orgid", "issuerid", "name"):
        assert len({i[field] for i in issuers}) == 200
    counts = Counter(row["orgid"] for row in sim.truth("doctypes"))
    assert max(counts.values()) <= 3
    assert len(counts) < 200  # some issuers drew no doctypes
    info = sim.info()
    assert info["issuers"] == 200 and info["doctypes"] == sum(counts.values())
