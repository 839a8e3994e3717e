"""Many accounts of one API: instances of a source type share its tables, told apart by
`_source`, and never touch each other's rows, state or runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import ConfigError, settings_from_mapping
from pipeline.sandbox import AfostoSimulator, RunningSimulator, serve
from pipeline.sources import SOURCES
from pipeline.targets import select_streams
from tests.helpers import instance_settings, rows, scalar, sync


def _shop(seed: int = 61) -> AfostoSimulator:
    # The same seed for both shops: the same ids at both, so a row under the wrong `_source`
    # or a delete judged across instances would show.
    return AfostoSimulator(
        contacts=5, shipments=30, parcels=40, groups=2, prices_per_group=5, seed=seed
    )


@pytest.fixture
async def shops() -> AsyncIterator[tuple[RunningSimulator, RunningSimulator]]:
    async with serve(_shop()) as nl, serve(_shop()) as be:
        yield nl, be


async def _stored(engine: AsyncEngine, table: str, source: str) -> dict[Any, Any]:
    found = await rows(
        engine,
        f"SELECT id, data FROM {table} WHERE _source = :s AND _deleted_at IS NULL",
        s=source,
    )
    return {r.id: r.data for r in found}


async def test_each_instance_stores_its_own_records_under_its_own_source(
    engine: AsyncEngine, shops: tuple[RunningSimulator, RunningSimulator]
) -> None:
    nl, be = shops
    sim_nl: Any = nl.sim
    sim_be: Any = be.sim
    parcel = sim_be.truth("parcels")[0]["id"]
    sim_be.update_parcel(parcel, weight=123_456)  # the same id, other content, at one shop
    gone = sim_nl.truth("parcels")[1]["id"]
    sim_nl.delete_parcel(gone)  # gone at one shop only
    settings = instance_settings({"afosto_nl": nl, "afosto_be": be})

    outcomes = await sync(engine, settings, "parcels", "prices")  # bare names: every instance

    assert sorted(outcomes) == [
        "afosto_be.parcels",
        "afosto_be.prices",
        "afosto_nl.parcels",
        "afosto_nl.prices",
    ]
    assert all(o.status == "succeeded" for o in outcomes.values()), outcomes
    for source, sim in (("afosto_nl", sim_nl), ("afosto_be", sim_be)):
        truth = {p["id"]: p for p in sim.truth("parcels")}
        assert await _stored(engine, "afosto.parcels", source) == truth
        prices = {p["id"]: p for p in sim.truth("prices")}
        assert await _stored(engine, "afosto.prices", source) == prices
    nl_items = await scalar(
        engine, "SELECT count(*) FROM afosto.parcel_items WHERE _source = 'afosto_nl'"
    )
    assert nl_items == sum(len(p["items"]) for p in sim_nl.truth("parcels"))
    assert await scalar(engine, "SELECT count(*) FROM afosto.parcels WHERE _source = 'afosto'") == 0
    assert gone in await _stored(engine, "afosto.parcels", "afosto_be")
    states = {r.stream for r in await rows(engine, "SELECT stream FROM pipeline.stream_state")}
    assert {"afosto_nl.parcels", "afosto_be.parcels"} <= states


async def test_a_deletion_at_one_instance_leaves_the_others_row(
    engine: AsyncEngine, shops: tuple[RunningSimulator, RunningSimulator]
) -> None:
    nl, be = shops
    settings = instance_settings({"afosto_nl": nl, "afosto_be": be})
    await sync(engine, settings, "parcels")
    sim_nl: Any = nl.sim
    gone = sim_nl.truth("parcels")[0]["id"]
    sim_nl.delete_parcel(gone)

    outcomes = await sync(engine, settings, "parcels")

    assert outcomes["afosto_nl.parcels"].deleted == 1
    assert outcomes["afosto_be.parcels"].deleted == 0
    deleted = await rows(
        engine, "SELECT _source, id FROM afosto.parcels WHERE _deleted_at IS NOT NULL"
    )
    assert [(r._source, r.id) for r in deleted] == [("afosto_nl", gone)]


async def test_one_instance_failing_never_stops_or_touches_another(
    engine: AsyncEngine, shops: tuple[RunningSimulator, RunningSimulator]
) -> None:
    nl, be = shops
    settings = instance_settings(
        {"afosto_nl": nl, "afosto_be": be}, extra={"afosto_be": {"token": "not-a-valid-jwt"}}
    )
    outcomes = await sync(engine, settings, "shipments")

    assert outcomes["afosto_nl.shipments"].status == "succeeded"
    assert outcomes["afosto_be.shipments"].status == "failed"
    assert "afosto_be" in (outcomes["afosto_be.shipments"].error or "")
    assert await scalar(
        engine, "SELECT count(*) FROM afosto.shipments WHERE _source = 'afosto_nl'"
    ) == len(nl.sim.truth("shipments"))  # type: ignore[attr-defined]
    assert (
        await scalar(engine, "SELECT count(*) FROM afosto.shipments WHERE _source = 'afosto_be'")
        == 0
    )


def test_an_instance_names_its_type_and_is_chosen_by_its_key_or_its_stream_name() -> None:
    settings = settings_from_mapping(
        {
            "sources": {
                "afosto_nl": {"type": "afosto", "token": "a"},
                "afosto_be": {"type": "afosto", "token": "b"},
                # no type: the instance is named after it
                "soho": {"token": "c", "base_url": "https://soho.example.com/api/v1"},
            }
        },
        {},
        SOURCES,
    )
    assert {n: c.type for n, c in settings.sources.items()} == {
        "afosto_nl": "afosto",
        "afosto_be": "afosto",
        "soho": "soho",
    }
    keys = [t.key for t in select_streams(settings, ["afosto_nl.shipments"])]
    assert keys == ["afosto_nl.shipments"]
    keys = [t.key for t in select_streams(settings, ["shipments"])]
    assert keys == ["afosto_nl.shipments", "afosto_be.shipments"]
    keys = [t.key for t in select_streams(settings, ["afosto.shipments"])]  # the type's
    assert keys == ["afosto_nl.shipments", "afosto_be.shipments"]
    assert [t.instance for t in select_streams(settings, ["customers"])] == ["soho"]


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        (
            {"shop": {"token": "a"}},
            'unknown source; known sources: afosto, digilocker, soho, sparkfly, valomnia (for another account of one, add type = "<source>")',
        ),
        (
            {"shop": {"type": "shopify", "token": "a"}},
            "sources.shop.type: unknown source type 'shopify'",
        ),
        ({"Shop-NL": {"type": "afosto", "token": "a"}}, "an instance name is lower-case letters"),
    ],
)
def test_a_wrong_instance_is_one_clear_line(sources: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from_mapping({"sources": sources}, {}, SOURCES, label="pipeline.toml")
