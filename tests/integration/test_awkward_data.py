"""Ordinary but awkward data, end to end through the simulators: what real sources send and the
fast paths (raw records, stored hashes, held writes) once got wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import settings_from_mapping
from pipeline.run import Runner
from pipeline.sandbox import (
    AfostoSimulator,
    DigiLockerSimulator,
    Simulator,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
)
from pipeline.sources import SOURCES
from pipeline.targets import select_streams
from tests import source_limits
from tests.helpers import live_rows, make_settings, rows, scalar, sync
from tests.wire import WireSimulator

# A backslash, then the six characters `u0000`: text, not a NUL. On the wire `\\u0000`.
LOOKS_LIKE_NUL = "back\\slash \\u0000 x"


def _afosto() -> AfostoSimulator:
    return AfostoSimulator(
        contacts=30, shipments=30, parcels=30, groups=2, prices_per_group=10, seed=41
    )


def _first(records: list[dict[str, Any]]) -> str:
    return str(records[0]["id"])


# (stream, simulator, how to give one record the text, its table, its key column, the key)
CASES: list[tuple[str, Callable[[], Simulator], Callable[[Any], Any], str]] = [
    (
        "soho.customers",
        lambda: SohoSimulator(customers=40, seed=42),
        lambda sim: sim.update_customer(sim.ids[3], email=LOOKS_LIKE_NUL)["id"],
        "soho.customers",
    ),
    (
        "valomnia.authorities",
        lambda: ValomniaSimulator(authorities=40, seed=43),
        lambda sim: sim.update(sim.truth()[3]["id"], name=LOOKS_LIKE_NUL)["id"],
        "valomnia.authorities",
    ),
    (
        "sparkfly.credentials",
        lambda: SparkflySimulator(credentials=40, seed=44),
        lambda sim: sim.update(sim.ids[3], url=LOOKS_LIKE_NUL)["id"],
        "sparkfly.credentials",
    ),
    (
        "afosto.contacts",
        _afosto,
        lambda sim: sim.update_contact(_first(sim.truth("contacts")), email=LOOKS_LIKE_NUL)["id"],
        "afosto.contacts",
    ),
    (
        "afosto.shipments",
        _afosto,
        lambda sim: sim.update_shipment(_first(sim.truth("shipments")), number=LOOKS_LIKE_NUL)[
            "id"
        ],
        "afosto.shipments",
    ),
    (
        "afosto.parcels",
        _afosto,
        lambda sim: sim.update_parcel(_first(sim.truth("parcels")), number=LOOKS_LIKE_NUL)["id"],
        "afosto.parcels",
    ),
]


@pytest.mark.parametrize(("key", "make", "edit", "table"), CASES, ids=[c[0] for c in CASES])
async def test_text_that_looks_like_a_nul_escape_is_stored_not_quarantined(
    engine: AsyncEngine,
    key: str,
    make: Callable[[], Simulator],
    edit: Callable[[Any], Any],
    table: str,
) -> None:
    """`\\u0000` with its backslash escaped is six characters of text; only a real U+0000 is
    refused. It was quarantined on every stream kind, and the sync exited 3."""
    async with serve(make()) as running:
        record_id = edit(running.sim)
        settings = make_settings(**{key.split(".")[0]: running})
        outcome = (await sync(engine, settings, key))[key]

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.quarantined == 0
    assert await scalar(engine, "SELECT count(*) FROM pipeline.quarantine") == 0
    stored = await live_rows(engine, table)
    assert LOOKS_LIKE_NUL in stored[record_id].values()


async def test_digilocker_doctypes_keep_text_that_looks_like_a_nul_escape(
    engine: AsyncEngine,
) -> None:
    sim = DigiLockerSimulator(issuers=3, seed=45)
    orgid = sim.truth("issuers")[0]["orgid"]
    sim.add_doctype(orgid, "ZZNUL", LOOKS_LIKE_NUL)
    async with serve(sim) as running:
        outcome = (await sync(engine, make_settings(digilocker=running), "doctypes"))[
            "digilocker.doctypes"
        ]

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.quarantined == 0
    [row] = await rows(
        engine, "SELECT description FROM digilocker.doctypes WHERE doctype = 'ZZNUL'"
    )
    assert row.description == LOOKS_LIKE_NUL


async def test_a_real_nul_is_still_quarantined_and_the_rest_loads(engine: AsyncEngine) -> None:
    async with serve(SohoSimulator(customers=40, seed=46)) as running:
        sim: Any = running.sim
        bad = sim.update_customer(sim.ids[5], email="nul\x00inside")["id"]
        outcome = (await sync(engine, make_settings(running), "customers"))["soho.customers"]
        truth = {c["id"]: c for c in sim.truth()}

    assert outcome.status == "succeeded" and outcome.totals.quarantined == 1
    [row] = await rows(engine, "SELECT record_key, reason FROM pipeline.quarantine")
    assert row.record_key == str(bad) and "NUL" in row.reason
    assert await live_rows(engine, "soho.customers") == {k: v for k, v in truth.items() if k != bad}


async def test_a_rerun_whose_only_news_are_records_to_quarantine_succeeds_every_time(
    engine: AsyncEngine,
) -> None:
    """A re-run of a full scan whose pages are mostly unchanged holds its few writes
    (`pipeline.load.held`); when the only new items were records to quarantine, the held batch had
    rejections and no record, and releasing it crashed the stream on every run."""
    sim = AfostoSimulator(contacts=5, shipments=40, parcels=150, groups=1, prices_per_group=2)
    async with serve(sim) as running:
        settings = make_settings(afosto=running)
        first = (await sync(engine, settings, "parcels"))["afosto.parcels"]
        assert first.status == "succeeded", first.error
        no_key = sim.insert_parcel()
        sim._parcels.materialise(sim._parcels.seq_of(no_key["id"])).pop("id")
        sim.insert_parcel(updated_at="last Tuesday")
        outcomes = [(await sync(engine, settings, "parcels"))["afosto.parcels"] for _ in range(2)]
        truth = {p["id"]: p for p in sim.truth("parcels") if "id" in p}

    for outcome in outcomes:
        assert outcome.status == "succeeded", outcome.error
        assert outcome.totals.quarantined == 2 and outcome.totals.read == 152
    stored = await live_rows(engine, "afosto.parcels")
    assert stored == {k: v for k, v in truth.items() if v["updated_at"] != "last Tuesday"}
    reasons = {r.reason for r in await rows(engine, "SELECT reason FROM pipeline.quarantine")}
    assert len(reasons) == 2


async def test_a_record_that_is_not_utf_8_is_quarantined_alone_on_a_parsed_stream_too(
    engine: AsyncEngine,
) -> None:
    """Sparkfly's records are parsed with their page (they come wrapped). A record whose text
    is not UTF-8 made the whole body 'not valid JSON': retried, then the stream failed on
    every run. Now that record alone is quarantined."""

    def credential(i: int, name: bytes = b"ok") -> bytes:
        return (
            b'{"credential": {"id": %d, "offer_name": "%s", "updated_at": "2024-05-01T00:00:00Z"}}'
            % (i, name)
        )

    sim = WireSimulator()
    wires = [credential(i) for i in range(1, 8)]
    wires[3] = credential(4, b"caf\xe9")  # Latin-1, as a misconfigured server sends it
    sim.serve_list("/v1.0/credentials", "sparkfly", wires)
    async with serve(sim) as running:
        table = {"token": "t", "base_url": running.url, "backoff_seconds": 0.01}
        settings = settings_from_mapping({"sources": {"sparkfly": table}}, {}, SOURCES, label="t")
        source_limits.expect_settings(settings, {"sparkfly": running})
        [outcome] = await Runner(engine).run(select_streams(settings, ["credentials"]))

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.quarantined == 1
    stored = await live_rows(engine, "sparkfly.credentials")
    assert sorted(stored) == [1, 2, 3, 5, 6, 7]
    [row] = await rows(engine, "SELECT reason FROM pipeline.quarantine")
    assert row.reason.startswith("not valid JSON")
