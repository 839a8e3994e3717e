"""Afosto: contacts, shipments, parcels (+ items) and prices (+ VAT, per group) end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import AfostoSimulator, RunningSimulator, serve
from tests.helpers import live_rows, make_settings, rows, scalar, sync

STREAMS = ("afosto.contacts", "afosto.shipments", "afosto.parcels", "afosto.prices")


@pytest.fixture
async def afosto() -> AsyncIterator[RunningSimulator]:
    sim = AfostoSimulator(
        contacts=60, shipments=120, parcels=150, groups=4, prices_per_group=30, seed=31
    )
    async with serve(sim) as running:
        yield running


def _by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in records}


async def _items(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in await rows(
        engine,
        "SELECT parcel_id, id, sku, quantity, description FROM afosto.parcel_items ORDER BY parcel_id, position",
    ):
        out.setdefault(row.parcel_id, []).append(
            {"id": row.id, "sku": row.sku, "quantity": row.quantity, "description": row.description}
        )
    return out


async def _vat(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in await rows(
        engine,
        "SELECT price_id, rate, country, administrative_area FROM afosto.price_vat ORDER BY price_id, position",
    ):
        out.setdefault(row.price_id, []).append(
            {
                "rate": row.rate,
                "country": row.country,
                "administrative_area": row.administrative_area,
            }
        )
    return out


TABLES = {
    "contacts": "afosto.contacts",
    "shipments": "afosto.shipments",
    "parcels": "afosto.parcels",
    "groups": "afosto.price_groups",
    "prices": "afosto.prices",
}


async def assert_db_equals_source(
    engine: AsyncEngine, sim: AfostoSimulator, resources: tuple[str, ...] = tuple(TABLES)
) -> None:
    for resource in resources:
        table = TABLES[resource]
        assert await live_rows(engine, table) == _by_id(sim.truth(resource)), table
    # Child tables mirror the arrays of their parent rows exactly (a parent marked deleted keeps
    # its rows, as it keeps its own); for live parents that is the source's truth.
    assert await _items(engine) == await _arrays(engine, "afosto.parcels", "items")
    assert await _vat(engine) == await _arrays(engine, "afosto.prices", "vat")


async def _arrays(engine: AsyncEngine, table: str, field: str) -> dict[str, list[dict[str, Any]]]:
    stored = await rows(engine, f"SELECT id, data FROM {table}")
    return {row.id: row.data[field] for row in stored if row.data.get(field)}


async def test_first_sync_equals_the_source_field_by_field(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    outcomes = await sync(engine, make_settings(afosto=afosto))

    for key in STREAMS:
        assert outcomes[key].status == "succeeded", outcomes[key].error
        assert outcomes[key].totals.quarantined == 0
    await assert_db_equals_source(engine, sim)
    shipment = sim.truth("shipments")[7]
    row = (await rows(engine, "SELECT * FROM afosto.shipments WHERE id = :id", id=shipment["id"]))[
        0
    ]
    assert (row.number, row.type, row.contact_id, row.is_canceled) == (
        shipment["number"],
        shipment["type"],
        shipment["contact_id"],
        shipment["is_canceled"],
    )
    assert row.updated_at == datetime.fromisoformat(shipment["updated_at"])
    parcel = sim.truth("parcels")[3]
    row = (await rows(engine, "SELECT * FROM afosto.parcels WHERE id = :id", id=parcel["id"]))[0]
    assert (row.shipment_id, row.weight, row.tracking_code, row.label_reference) == (
        parcel["shipment_id"],
        parcel["weight"],
        parcel["tracking_code"],
        parcel["label"]["reference"],
    )
    contact = sim.truth("contacts")[5]
    row = (await rows(engine, "SELECT * FROM afosto.contacts WHERE id = :id", id=contact["id"]))[0]
    assert (row.email, row.version, row.tags) == (
        contact["email"],
        contact["version"],
        contact["tags"],
    )
    assert row.organisation_name == contact["organisations"]["primary"]["name"]
    price = sim.truth("prices")[0]
    row = (await rows(engine, "SELECT * FROM afosto.prices WHERE id = :id", id=price["id"]))[0]
    assert (row.sku, row.amount, row.price_group_id) == (
        price["sku"],
        price["amount"],
        price["price_group_id"],
    )
    # Shipments and parcels know their count: pages after the first were fetched concurrently.
    assert outcomes["afosto.shipments"].pages == 2 and outcomes["afosto.parcels"].pages == 2


async def test_quiet_resync_writes_nothing(engine: AsyncEngine, afosto: RunningSimulator) -> None:
    settings = make_settings(afosto=afosto)
    await sync(engine, settings)
    snapshot = await rows(
        engine,
        "SELECT 'p' AS t, xmin::text AS v FROM afosto.parcel_items UNION ALL "
        "SELECT 'v', xmin::text FROM afosto.price_vat UNION ALL "
        "SELECT 's', xmin::text FROM afosto.shipments UNION ALL SELECT 'r', xmin::text FROM afosto.prices",
    )

    outcomes = await sync(engine, settings)

    for key in STREAMS:
        o = outcomes[key]
        assert (o.status, o.totals.inserted, o.totals.updated, o.deleted) == (
            "succeeded",
            0,
            0,
            0,
        ), key
    assert (
        await rows(
            engine,
            "SELECT 'p' AS t, xmin::text AS v FROM afosto.parcel_items UNION ALL "
            "SELECT 'v', xmin::text FROM afosto.price_vat UNION ALL "
            "SELECT 's', xmin::text FROM afosto.shipments UNION ALL SELECT 'r', xmin::text FROM afosto.prices",
        )
        == snapshot
    )


async def test_updates_inserts_and_deletes_are_reflected(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    settings = make_settings(afosto=afosto)
    await sync(engine, settings)
    shipments = sim.truth("shipments")
    sim.update_shipment(shipments[0]["id"], is_canceled=not shipments[0]["is_canceled"])
    sim.insert_shipment()
    sim.delete_shipment(shipments[1]["id"])
    parcels = sim.truth("parcels")
    kept = parcels[0]["items"][:1]
    sim.set_parcel_items(parcels[0]["id"], kept)  # items removed at the source
    sim.delete_parcel(parcels[1]["id"])
    contacts = sim.truth("contacts")
    sim.update_contact(contacts[0]["id"], email="renamed@example.org")
    sim.delete_contact(contacts[1]["id"])
    groups = sim.truth("groups")
    prices = sim.truth("prices")
    edited = prices[0]
    sim.upsert_price(
        edited["price_group_id"],
        edited["sku"],
        edited["amount"] + 100,
        active_at=edited["active_at"],
    )
    sim.upsert_price(groups[1]["id"], "NEW-SKU-1", 1999)
    sim.set_vat(prices[5]["id"], [{"rate": 6, "country": "NL", "administrative_area": ""}])
    sim.soft_delete_group(groups[2]["id"])

    outcomes = await sync(engine, settings)

    assert all(outcomes[k].status == "succeeded" for k in STREAMS)
    c, s, p, r = (outcomes[key] for key in STREAMS)
    assert (s.totals.inserted, s.totals.updated, s.deleted) == (1, 1, 1)
    assert (p.totals.updated, p.deleted) == (1, 1)
    assert (c.totals.updated, c.deleted) == (1, 1)
    assert r.totals.inserted == 1 and r.totals.updated >= 3  # price, VAT, and the disabled group
    await assert_db_equals_source(engine, sim)
    assert (
        await scalar(
            engine, "SELECT _deleted_at FROM afosto.shipments WHERE id = :id", id=shipments[1]["id"]
        )
        is not None
    )
    disabled = (
        await rows(
            engine,
            "SELECT deleted_at, _deleted_at FROM afosto.price_groups WHERE id = :id",
            id=groups[2]["id"],
        )
    )[0]
    assert disabled.deleted_at is not None and disabled._deleted_at is None  # kept, with its flag
    edited_row = await rows(
        engine, "SELECT amount, created_at FROM afosto.prices WHERE id = :id", id=edited["id"]
    )
    assert edited_row[0].amount == edited["amount"] + 100
    assert edited_row[0].created_at == datetime.fromisoformat(
        edited["created_at"]
    )  # edited in place


async def test_a_price_removed_from_its_group_is_deleted_after_two_complete_scans(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    settings = make_settings(afosto=afosto)
    await sync(engine, settings, "prices")
    victim = sim.truth("prices")[10]
    sim.delete_price(victim["id"])

    first = (await sync(engine, settings, "prices"))["afosto.prices"]
    assert first.deleted == 0  # absent once: a candidate, not a deletion (no detail endpoint)
    second = (await sync(engine, settings, "prices"))["afosto.prices"]
    assert second.deleted == 1
    await assert_db_equals_source(engine, sim, ("groups", "prices"))


async def test_a_token_without_a_scope_fails_only_that_stream_naming_the_scope(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    token = sim.issue_token(["rel:contacts:read", "lcs:handling:read", "cat:prices:read"])
    outcomes = await sync(engine, make_settings(afosto=afosto, afosto_extra={"token": token}))

    failed = outcomes["afosto.shipments"]
    assert failed.status == "failed"
    assert (
        failed.error is not None
        and "HTTP 403" in failed.error
        and "lcs:shipments:read" in failed.error
    )
    assert token not in failed.error
    for key in ("afosto.contacts", "afosto.parcels", "afosto.prices"):
        assert outcomes[key].status == "succeeded", outcomes[key].error


async def test_contacts_without_a_count_are_read_until_an_empty_page(
    engine: AsyncEngine, afosto: RunningSimulator
) -> None:
    sim: AfostoSimulator = afosto.sim  # type: ignore[assignment]
    settings = make_settings(afosto=afosto, streams={"afosto.contacts": {"page_size": 25}})
    outcome = (await sync(engine, settings, "contacts"))["afosto.contacts"]

    assert outcome.status == "succeeded" and outcome.totals.inserted == 60
    pages = sorted(int(r.header("x-page")) for r in sim.requests if r.path == "/rel/contacts")
    # 60 contacts at 25: pages 1-3 hold records, page 4 is the empty one; at most a window of
    # look-ahead pages beyond it were asked for (and cancelled).
    assert pages[:4] == [1, 2, 3, 4]
    assert max(pages) <= 4 + settings.sources["afosto"].settings.max_concurrency


async def test_a_server_that_clamps_the_page_size_is_read_completely(engine: AsyncEngine) -> None:
    sim = AfostoSimulator(
        contacts=5,
        shipments=130,
        parcels=10,
        groups=1,
        prices_per_group=3,
        seed=5,
        max_page_size=20,
    )
    async with serve(sim) as afosto:
        settings = make_settings(afosto=afosto, streams={"afosto.shipments": {"page_size": 100}})
        outcome = (await sync(engine, settings, "shipments"))["afosto.shipments"]
    assert outcome.status == "succeeded" and outcome.totals.inserted == 130
    assert outcome.pages == 7  # 130 / 20 served per page
