"""Sparkfly credentials: wrapped records, will_paginate pages, filters, token exchange."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import RunningSimulator, SparkflySimulator, serve
from tests.helpers import live_rows, make_settings, rows, scalar, sync

KEY = "sparkfly.credentials"
TABLE = "sparkfly.credentials"


@pytest.fixture
async def sparkfly() -> AsyncIterator[RunningSimulator]:
    async with serve(SparkflySimulator(credentials=140, seed=51)) as running:
        yield running


def _truth(sim: Any, **filters: Any) -> dict[int, dict[str, Any]]:
    return {c["id"]: c for c in sim.truth(**filters)}


async def test_first_sync_unwraps_every_credential_with_typed_columns(
    engine: AsyncEngine, sparkfly: RunningSimulator
) -> None:
    sim: Any = sparkfly.sim
    outcome = (await sync(engine, make_settings(sparkfly=sparkfly)))[KEY]

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.inserted == 140 and outcome.pages == 3  # 50 per page
    assert await live_rows(engine, TABLE) == _truth(sim)
    record = sim.truth()[4]
    row = (await rows(engine, f"SELECT * FROM {TABLE} WHERE id = :id", id=record["id"]))[0]
    assert row.offer_ids == record["offer_ids"] and row.identifier == record["identifier"]
    assert (row.member_id, row.store_id, row.supports_barcode) == (
        record["member_id"],
        record["store_id"],
        record["supports_barcode"],
    )


async def test_quiet_resync_writes_nothing_and_changes_are_picked_up(
    engine: AsyncEngine, sparkfly: RunningSimulator
) -> None:
    sim: Any = sparkfly.sim
    settings = make_settings(sparkfly=sparkfly)
    await sync(engine, settings)
    quiet = (await sync(engine, settings))[KEY]
    assert (quiet.totals.inserted, quiet.totals.updated, quiet.deleted) == (0, 0, 0)

    ids = [c["id"] for c in sim.truth() if c["status"] == "open" and c["offer_ids"]]
    sim.update(ids[0], offer_name="Two for one")
    sim.redeem(ids[1])
    sim.void(ids[2])
    sim.delete(ids[3])
    sim.insert()

    outcome = (await sync(engine, settings))[KEY]

    assert (outcome.totals.inserted, outcome.totals.updated, outcome.deleted) == (1, 3, 1)
    assert await live_rows(engine, TABLE) == _truth(sim)
    assert await scalar(engine, f"SELECT _deleted_at FROM {TABLE} WHERE id = :id", id=ids[3])


async def test_a_filtered_stream_has_its_own_state_and_judges_deletions_in_its_scope(
    engine: AsyncEngine, sparkfly: RunningSimulator
) -> None:
    sim: Any = sparkfly.sim
    await sync(engine, make_settings(sparkfly=sparkfly))  # everything, unfiltered
    member = sim.truth()[0]["member_id"]
    filtered = make_settings(sparkfly=sparkfly, streams={KEY: {"member_id": member}})
    sim.clear_requests()

    outcome = (await sync(engine, filtered))[f"{KEY}[member_id={member}]"]

    assert outcome.status == "succeeded"
    assert outcome.totals.read == len(sim.truth(member_id=member)) < 140
    assert all(r.query.get("member_id") == str(member) for r in sim.requests)
    # Rows of other members were not in the filtered answer, and are not "absent" from it.
    assert outcome.deleted == 0
    assert await scalar(engine, f"SELECT count(*) FROM {TABLE} WHERE _absent_scans > 0") == 0
    states = {r.stream for r in await rows(engine, "SELECT stream FROM pipeline.stream_state")}
    assert states == {KEY, f"{KEY}[member_id={member}]"}

    victim = sim.truth(member_id=member)[0]["id"]
    sim.delete(victim)
    again = (await sync(engine, filtered))[f"{KEY}[member_id={member}]"]
    assert again.deleted == 1


async def test_identity_and_key_are_exchanged_for_a_token_and_renewed(
    engine: AsyncEngine, sparkfly: RunningSimulator
) -> None:
    sim: Any = sparkfly.sim
    settings = make_settings(
        sparkfly=sparkfly,
        extra={"sparkfly": {"token": None, "identity": sim.identity, "key": sim.key}},
    )

    def expire_once(_sim: Any, request: Any) -> None:
        if request.path == "/v1.0/credentials" and request.query.get("page") == "2":
            if not getattr(expire_once, "done", False):
                expire_once.done = True  # type: ignore[attr-defined]
                sim.expire_tokens()

    sim.on_request(expire_once)
    outcome = (await sync(engine, settings))[KEY]

    assert outcome.status == "succeeded", outcome.error
    exchanges = [r for r in sim.requests if r.path == "/auth"]
    assert len(exchanges) == 2
    assert await live_rows(engine, TABLE) == _truth(sim)


async def test_credential_identifiers_and_the_token_never_reach_the_logs(
    engine: AsyncEngine, sparkfly: RunningSimulator, log_text: Callable[[], str]
) -> None:
    sim: Any = sparkfly.sim
    await sync(engine, make_settings(sparkfly=sparkfly))
    text = log_text()
    assert "page_loaded" in text
    assert sim.token not in text
    for record in sim.truth():
        if record["identifier"]:
            assert record["identifier"] not in text


async def test_a_filtered_stream_is_named_like_any_other(sparkfly: RunningSimulator) -> None:
    from pipeline.targets import select_streams

    settings = make_settings(sparkfly=sparkfly, streams={KEY: {"member_id": 1001}})
    for name in ("credentials", "sparkfly.credentials", "sparkfly.credentials[member_id=1001]"):
        [target] = select_streams(settings, [name])
        assert target.key == "sparkfly.credentials[member_id=1001]"
