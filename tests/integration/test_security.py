"""Bad input and hostile peers: redirects to other hosts, huge bodies, hostile names and values,
TLS verification."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import AfostoSimulator, Redirect, RunningSimulator, serve
from tests.helpers import live_rows, make_settings, rows, scalar, sync


async def test_credentials_never_follow_a_redirect_to_another_host(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    seen: list[dict[str, str]] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"records": []})

    app = web.Application()
    app.router.add_get("/{tail:.*}", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        other = f"http://127.0.0.1:{port}/api/v1/customers"
        soho.sim.faults.add(Redirect(other), times=None, path_prefix="/api/v1/customers")
        outcome = (await sync(engine, make_settings(soho)))["soho.customers"]
    finally:
        await runner.cleanup()

    assert outcome.status == "failed"
    assert "redirected to another host" in (outcome.error or "")
    assert seen == []  # not even a request: no token, no cookie ever reached it


async def test_a_redirect_on_the_same_host_is_followed_with_credentials(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    soho.sim.faults.add(Redirect(f"{soho.url}/api/v1/customers?page=1&per=25"), times=1)
    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]
    assert outcome.status == "succeeded", outcome.error
    assert len(await live_rows(engine, "soho.customers")) == 120


async def test_a_response_above_the_size_limit_is_refused_clearly(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = make_settings(soho, soho_extra={"max_response_mb": 0.01})  # 10 KB; a page is more
    outcome = (await sync(engine, settings))["soho.customers"]
    assert outcome.status == "failed"
    assert "larger than 0.01 MB" in (outcome.error or "") and "max_response_mb" in (
        outcome.error or ""
    )


async def test_turning_tls_verification_off_is_logged(
    engine: AsyncEngine, soho: RunningSimulator, log_text: Any
) -> None:
    await sync(engine, make_settings(soho, soho_extra={"verify_tls": False}))
    assert "tls_verification_disabled" in log_text()


HOSTILE = "x'); DROP TABLE afosto.shipments; --"


async def test_hostile_ids_and_values_are_data_never_sql(engine: AsyncEngine) -> None:
    sim = AfostoSimulator(contacts=3, shipments=5, parcels=3, groups=2, prices_per_group=3, seed=99)
    hostile_group = sim.insert_group(id='g"; DROP TABLE afosto.prices; --/../../rel/contacts')
    sim.upsert_price(hostile_group["id"], HOSTILE, 100)
    shipment = sim.truth("shipments")[0]
    sim.update_shipment(
        shipment["id"], number=HOSTILE, list_id="'; DELETE FROM pipeline.sync_runs; --"
    )
    async with serve(sim) as afosto:
        outcomes = await sync(engine, make_settings(afosto=afosto), "shipments", "prices")

    assert all(o.status == "succeeded" for o in outcomes.values()), [
        o.error for o in outcomes.values()
    ]
    assert (
        await scalar(engine, "SELECT number FROM afosto.shipments WHERE id = :i", i=shipment["id"])
        == HOSTILE
    )
    assert await scalar(engine, "SELECT count(*) FROM afosto.prices WHERE sku = :s", s=HOSTILE) == 1
    assert await scalar(engine, "SELECT count(*) FROM pipeline.sync_runs") == 2
    # The group id went into a URL path as one quoted segment, not a path to another endpoint.
    price_paths = {r.path for r in sim.requests if r.path.endswith("/prices")}
    assert len(price_paths) == 3 and all(p.startswith("/cat/groups/") for p in price_paths)
    assert not any(r.path.startswith("/rel/") for r in sim.requests)
    assert [
        r.name
        for r in await rows(
            engine, "SELECT name FROM afosto.price_groups WHERE id = :i", i=hostile_group["id"]
        )
    ]


def test_stream_and_source_names_from_config_must_be_declared() -> None:
    import pytest

    from pipeline.config import ConfigError, settings_from_mapping
    from pipeline.sources import SOURCES
    from pipeline.targets import select_streams

    hostile = 'soho"; DROP TABLE soho.customers; --'
    # an instance name becomes every row's `_source` and a stream key: a plain word only
    with pytest.raises(ConfigError, match="an instance name is lower-case letters"):
        settings_from_mapping(
            {"sources": {hostile: {"base_url": "https://x.example"}}}, {}, SOURCES
        )
    with pytest.raises(ConfigError, match="unknown source type"):
        settings_from_mapping(
            {"sources": {"shop": {"type": hostile, "base_url": "https://x.example"}}}, {}, SOURCES
        )
    settings = settings_from_mapping(
        {"sources": {"soho": {"base_url": "https://x.example/api/v1", "token": "t" * 32}}},
        {},
        SOURCES,
    )
    with pytest.raises(ConfigError, match="unknown stream"):
        select_streams(settings, [hostile])
