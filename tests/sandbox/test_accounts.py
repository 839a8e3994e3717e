"""Several accounts of one API on one server: every request is answered by the account whose
credentials it carries, and control routes reach one account.

Every source is read the way its API authenticates (a bearer token, a form login, a token
exchange, a signed form), by a raw aiohttp client: what the engine does is tested in
tests/integration/test_accounts.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from pipeline.sandbox import (
    SANDBOXES,
    Accounts,
    AfostoSimulator,
    DigiLockerSimulator,
    RunningAccounts,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
    serve_accounts,
)
from pipeline.sandbox.core import Simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """No cookie jar: each request carries exactly the credentials a test gives it."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


Read = Callable[[aiohttp.ClientSession, str, Any], Awaitable[tuple[int, Any]]]


async def _answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    return response.status, await response.json(content_type=None)


async def read_soho(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {sim.token}"}
    async with http.get(f"{url}/api/v1/customers?per=25", headers=headers) as response:
        status, body = await _answer(response)
    return status, body["records"] if status == 200 else body


async def read_afosto(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {sim.token}", "x-page-size": "250"}
    async with http.get(f"{url}/lcs/parcels", headers=headers) as response:
        return await _answer(response)


async def valomnia_session(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    """Log in as `sim`'s user: (302, the session id) or the refusal."""
    form = {"j_username": sim.username, "j_password": sim.password}
    async with http.post(
        f"{url}/j_spring_security_check", data=form, allow_redirects=False
    ) as response:
        if response.status != 302:
            return await _answer(response)
        return response.status, response.cookies["JSESSIONID"].value


async def read_valomnia(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    status, session = await valomnia_session(http, url, sim)
    if status != 302:
        return status, session
    headers = {"Cookie": f"JSESSIONID={session}"}
    async with http.get(f"{url}/api/v2.1/authorities?max=100", headers=headers) as response:
        status, body = await _answer(response)
    return status, body["data"] if status == 200 else body


async def sparkfly_token(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    """Exchange `sim`'s identity and key: (204, the token) or the refusal."""
    headers = {"X-Auth-Identity": sim.identity, "X-Auth-Key": sim.key}
    async with http.get(f"{url}/auth", headers=headers) as response:
        if response.status != 204:
            return await _answer(response)
        return response.status, response.headers["X-Auth-Token"]


async def read_sparkfly(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    status, token = await sparkfly_token(http, url, sim)
    if status != 204:
        return status, token
    headers = {"X-Auth-Token": token}
    async with http.get(f"{url}/v1.0/credentials?per_page=100", headers=headers) as response:
        status, body = await _answer(response)
    return status, [c["credential"] for c in body["credentials"]] if status == 200 else body


def _signed(sim: Any) -> dict[str, str]:
    ts = sim.current_ts()
    return {"clientid": sim.client_id, "ts": ts, "hmac": sim.sign(ts)}


async def read_digilocker(http: aiohttp.ClientSession, url: str, sim: Any) -> tuple[int, Any]:
    async with http.post(f"{url}/public/oauth2/1/pull/issuers", data=_signed(sim)) as response:
        status, body = await _answer(response)
    return status, body["issuers"] if status == 200 else body


@dataclass(frozen=True)
class Probe:
    """A source as this suite meets it: a small simulator of a seed, how to read one list
    as an account, what that account holds for the list, and that list's stream."""

    make: Callable[[int], Simulator]
    read: Read
    truth: Callable[[Any], list[dict[str, Any]]]
    stream: str


PROBES = {
    "soho": Probe(
        lambda seed: SohoSimulator(customers=12, seed=seed),
        read_soho,
        lambda sim: sim.truth(),
        "customers",
    ),
    "afosto": Probe(
        lambda seed: AfostoSimulator(
            contacts=3, shipments=8, parcels=10, groups=1, prices_per_group=2, seed=seed
        ),
        read_afosto,
        lambda sim: sim.truth("parcels"),
        "parcels",
    ),
    "valomnia": Probe(
        lambda seed: ValomniaSimulator(authorities=15, seed=seed),
        read_valomnia,
        lambda sim: sim.truth(),
        "authorities",
    ),
    "sparkfly": Probe(
        lambda seed: SparkflySimulator(credentials=15, seed=seed),
        read_sparkfly,
        lambda sim: sim.truth(),
        "credentials",
    ),
    "digilocker": Probe(
        lambda seed: DigiLockerSimulator(issuers=6, seed=seed),
        read_digilocker,
        lambda sim: sim.truth("issuers"),
        "issuers",
    ),
}


@pytest.fixture(params=list(PROBES))
def probe(request: pytest.FixtureRequest) -> Probe:
    return PROBES[request.param]


def _accounts(probe: Probe, seed_a: int, seed_b: int) -> Accounts:
    return Accounts([probe.make(seed_a).as_account("a"), probe.make(seed_b).as_account("b")])


@pytest.fixture
async def two_seeds(probe: Probe) -> AsyncIterator[RunningAccounts]:
    async with serve_accounts(_accounts(probe, 1, 2)) as running:
        yield running


@pytest.fixture
async def one_seed(probe: Probe) -> AsyncIterator[RunningAccounts]:
    """Two accounts with the same seed: the same ids, the same records, until one changes."""
    async with serve_accounts(_accounts(probe, 7, 7)) as running:
        yield running


async def test_each_account_lists_its_own_records_and_none_of_the_others(
    http: aiohttp.ClientSession, probe: Probe, two_seeds: RunningAccounts
) -> None:
    a, b = two_seeds.accounts["a"], two_seeds.accounts["b"]
    assert probe.truth(a) != probe.truth(b)

    for sim, other in ((a, b), (b, a)):
        status, records = await probe.read(http, two_seeds.url, sim)
        assert status == 200, records
        assert records == probe.truth(sim)
        assert not [r for r in records if r in probe.truth(other)]
    assert a.requests and b.requests
    server = two_seeds.accounts.load.started_total
    assert (
        server == len(a.requests) + len(b.requests) == a.load.started_total + b.load.started_total
    )


async def test_credentials_of_no_account_get_the_apis_own_refusal(
    http: aiohttp.ClientSession, probe: Probe, two_seeds: RunningAccounts
) -> None:
    """A stranger (an account of another server) is refused by the server of several as a
    server of one refuses it, and no account logs or meters its request."""
    stranger = probe.make(1).as_account("stranger")
    async with serve(probe.make(1).as_account("a")) as alone:
        expected = await probe.read(http, alone.url, stranger)

    status, body = await probe.read(http, two_seeds.url, stranger)

    assert status == expected[0] == 401
    if isinstance(body, dict):  # Afosto numbers its error bodies (`reference`)
        body.pop("reference", None)
        expected[1].pop("reference", None)
    assert body == expected[1]
    assert two_seeds.accounts.unclaimed == 1
    assert not any(sim.requests for sim in two_seeds.accounts)


async def test_control_routes_reach_one_account(
    http: aiohttp.ClientSession, probe: Probe, one_seed: RunningAccounts
) -> None:
    a, b = one_seed.accounts["a"], one_seed.accounts["b"]
    first = probe.truth(b)[0]
    removal = SANDBOXES[b.name].streams[probe.stream].removal.mutate
    assert removal is not None
    spec = {key: value.format(**first) for key, value in removal.items()}

    async with http.post(f"{one_seed.url}/_sandbox/accounts/b/mutate", json=spec) as response:
        assert response.status == 200, await response.text()

    assert first not in probe.truth(b) and first in probe.truth(a)
    assert (await probe.read(http, one_seed.url, b)) == (200, probe.truth(b))
    assert (await probe.read(http, one_seed.url, a)) == (200, probe.truth(a))
    async with http.get(f"{one_seed.url}/_sandbox/accounts/b/stats") as response:
        assert (await response.json())["requests"] == b.load.started_total > 0
    async with http.get(f"{one_seed.url}/_sandbox/accounts/nobody/stats") as response:
        assert response.status == 404
        assert "accounts: a, b" in (await response.json())["error"]

    fault = {"kind": "http_error", "status": 503}
    async with http.post(f"{one_seed.url}/_sandbox/accounts/a/faults", json=fault) as response:
        assert response.status == 200
    assert (await probe.read(http, one_seed.url, b))[0] == 200
    assert (await probe.read(http, one_seed.url, a))[0] == 503
    assert (await probe.read(http, one_seed.url, a))[0] == 200


async def test_unprefixed_control_routes_reach_the_default_and_stats_the_whole_server(
    http: aiohttp.ClientSession,
) -> None:
    accounts = _accounts(PROBES["soho"], 1, 2)
    a: Any = accounts["a"]
    b: Any = accounts["b"]
    async with serve_accounts(accounts) as running:
        async with http.get(f"{running.url}/_sandbox/records") as response:
            assert (await response.json())["records"] == a.truth()
        async with http.get(f"{running.url}/_sandbox/info") as response:
            info = await response.json()
        assert info["token"] == a.token and info["accounts"]["b"] == b.info()
        async with http.get(f"{running.url}/_sandbox/accounts") as response:
            assert (await response.json())["accounts"]["a"] == a.info()
        a.load.started()
        accounts.load.started()
        async with http.get(f"{running.url}/_sandbox/stats") as response:
            stats = await response.json()
        assert stats["in_flight"] == 1 and stats["accounts"]["a"]["in_flight"] == 1
        async with http.post(f"{running.url}/_sandbox/reset_stats") as response:
            assert (await response.json())["peak_per_second"] == 0
    assert a.peak_per_second == 0 == accounts.peak_per_second


async def test_a_valomnia_login_opens_a_session_of_its_own_account(
    http: aiohttp.ClientSession,
) -> None:
    accounts = _accounts(PROBES["valomnia"], 3, 3)
    a: Any = accounts["a"]
    b: Any = accounts["b"]
    async with serve_accounts(accounts) as running:
        status, session = await valomnia_session(http, running.url, b)
        assert status == 302
        assert session in b._sessions and session not in a._sessions
        assert (b.login_count, a.login_count) == (1, 0)
        headers = {"Cookie": f"JSESSIONID={session}"}
        async with http.get(f"{running.url}/login/ajaxSuccess", headers=headers) as response:
            assert (await response.json())["username"] == b.username

        wrong = SimpleNamespace(username=b.username, password="wrong")
        refused = await valomnia_session(http, running.url, wrong)  # b's to refuse
    assert refused[0] == 401 and refused[1]["error"] == "invalid_credentials"
    assert b.login_count == 1 and len(b.requests) == 3 and not a.requests


async def test_a_sparkfly_exchange_hands_out_a_token_of_its_own_account(
    http: aiohttp.ClientSession,
) -> None:
    accounts = _accounts(PROBES["sparkfly"], 3, 3)
    a: Any = accounts["a"]
    b: Any = accounts["b"]
    async with serve_accounts(accounts) as running:
        status, token = await sparkfly_token(http, running.url, b)
        assert status == 204 and token in b._tokens and token not in a._tokens
        async with http.post(f"{running.url}/_sandbox/accounts/b/expire_tokens") as response:
            assert (await response.json())["expired"] == 1
        async with http.get(
            f"{running.url}/v1.0/credentials", headers={"X-Auth-Token": token}
        ) as response:
            assert response.status == 401
            assert "authenticate again" in (await response.json())["error"]
            assert "X-Runtime" in response.headers  # the API's headers on every answer
        assert (await read_sparkfly(http, running.url, b)) == (200, b.truth())
        assert (await read_sparkfly(http, running.url, a)) == (200, a.truth())
    assert (a.auth_count, b.auth_count) == (1, 2)


async def test_an_afosto_token_names_its_tenant_and_reaches_it(
    http: aiohttp.ClientSession,
) -> None:
    accounts = _accounts(PROBES["afosto"], 3, 4)
    a: Any = accounts["a"]
    b: Any = accounts["b"]
    async with serve_accounts(accounts) as running:
        async with http.post(f"{running.url}/_sandbox/accounts/b/token", json={}) as response:
            token = (await response.json())["token"]
        headers = {"Authorization": f"Bearer {token}", "x-page-size": "250"}
        async with http.get(f"{running.url}/lcs/parcels", headers=headers) as response:
            assert await response.json() == b.truth("parcels") != a.truth("parcels")
    assert a.tenant != b.tenant


async def test_digilocker_multipart_forms_reach_their_account(
    http: aiohttp.ClientSession,
) -> None:
    accounts = _accounts(PROBES["digilocker"], 3, 4)
    async with serve_accounts(accounts) as running:
        for sim in accounts:
            form = aiohttp.FormData(_signed(sim), default_to_multipart=True)
            async with http.post(f"{running.url}/public/statistics/1/counts", data=form) as r:
                assert await r.json() == sim.statistics()  # type: ignore[attr-defined]
    assert accounts["a"].statistics() != accounts["b"].statistics()  # type: ignore[attr-defined]


def test_a_server_of_accounts_wants_named_accounts_of_one_api() -> None:
    with pytest.raises(ValueError, match="as_account"):
        Accounts([SohoSimulator(customers=1)])
    with pytest.raises(ValueError, match="two accounts named 'a'"):
        Accounts([SohoSimulator(customers=1).as_account("a") for _ in range(2)])
    with pytest.raises(ValueError, match="one API"):
        Accounts([SohoSimulator(customers=1).as_account("a"), SparkflySimulator().as_account("b")])
    with pytest.raises(ValueError, match="lower-case"):
        SohoSimulator(customers=1).as_account("Shop-NL")
