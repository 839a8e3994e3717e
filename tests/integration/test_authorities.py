"""Valomnia authorities: server-side incremental, seek paging, ties, sessions, live changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import LoggedRequest, RunningSimulator
from tests.helpers import live_rows, make_settings, rows, scalar, sync

TABLE = "valomnia.authorities"
KEY = "valomnia.authorities"


def list_requests(sim: Any) -> list[LoggedRequest]:
    return [r for r in sim.requests if r.path.endswith("/authorities")]


async def assert_db_equals_source(engine: AsyncEngine, valomnia: RunningSimulator) -> None:
    truth = {a["id"]: a for a in valomnia.sim.truth()}  # type: ignore[attr-defined]
    assert await live_rows(engine, TABLE) == truth


def _second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


async def test_first_sync_loads_everything_typed(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    outcome = (await sync(engine, make_settings(valomnia=valomnia)))[KEY]

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.inserted == 230
    await assert_db_equals_source(engine, valomnia)
    truth = {a["id"]: a for a in valomnia.sim.truth()}  # type: ignore[attr-defined]
    for row in await rows(engine, f"SELECT id, name, date_created, last_updated FROM {TABLE}"):
        assert row.name == truth[row.id]["name"]
        assert row.date_created == datetime.fromisoformat(truth[row.id]["dateCreated"])
        assert row.last_updated == datetime.fromisoformat(truth[row.id]["lastUpdated"])
    latest = max(datetime.fromisoformat(a["lastUpdated"]) for a in truth.values())
    assert await scalar(engine, "SELECT watermark FROM pipeline.stream_state") == latest
    for request in list_requests(valomnia.sim):
        assert request.query["sort"] == "lastUpdated" and request.query["order"] == "asc"


async def test_quiet_resync_makes_one_request_and_writes_nothing(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    watermark = await scalar(engine, "SELECT watermark FROM pipeline.stream_state")
    valomnia.sim.clear_requests()

    outcome = (await sync(engine, settings))[KEY]

    assert (outcome.totals.inserted, outcome.totals.updated) == (0, 0)
    [request] = list_requests(valomnia.sim)
    assert request.query["lastUpdated_gte"] == watermark.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert request.query["offset"] == "0"


async def test_updates_and_inserts_are_picked_up(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    sim = valomnia.sim
    ids = [a["id"] for a in sim.truth()]  # type: ignore[attr-defined]
    for aid in ids[:5]:
        sim.update(aid, name=f"Renamed {aid}")  # type: ignore[attr-defined]
    sim.insert("Night shift lead")  # type: ignore[attr-defined]
    sim.insert("Forklift driver")  # type: ignore[attr-defined]
    sim.clear_requests()

    outcome = (await sync(engine, settings))[KEY]

    assert (outcome.totals.inserted, outcome.totals.updated) == (2, 5)
    assert len(list_requests(sim)) == 1
    await assert_db_equals_source(engine, valomnia)


async def test_records_sharing_the_watermark_second_are_never_skipped(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim = valomnia.sim
    second = _second(datetime.now(UTC) - timedelta(minutes=5))
    tied = [sim.insert(f"Tied {i}", at=second)["id"] for i in range(4)]  # type: ignore[attr-defined]
    settings = make_settings(valomnia=valomnia)
    await sync(engine, settings)
    assert await scalar(engine, "SELECT watermark FROM pipeline.stream_state") == second

    # Within that same second: one tied record changes, another record joins the second.
    sim.update(tied[2], name="Tied 2, renamed", at=second)  # type: ignore[attr-defined]
    joined = sim.insert("Joined the tie", at=second)["id"]  # type: ignore[attr-defined]

    outcome = (await sync(engine, settings))[KEY]

    assert (outcome.totals.inserted, outcome.totals.updated) == (1, 1)
    stored = await live_rows(engine, TABLE)
    assert stored[tied[2]]["name"] == "Tied 2, renamed" and joined in stored
    await assert_db_equals_source(engine, valomnia)


async def test_more_records_in_one_second_than_a_page_holds_does_not_loop(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim = valomnia.sim
    second = _second(datetime.now(UTC) - timedelta(minutes=1))
    for i in range(23):
        sim.insert(f"Bulk import {i}", at=second)  # type: ignore[attr-defined]
    settings = make_settings(valomnia=valomnia, streams={KEY: {"page_size": 5}})

    outcome = (await sync(engine, settings))[KEY]

    assert outcome.status == "succeeded", outcome.error
    await assert_db_equals_source(engine, valomnia)
    assert len(list_requests(sim)) <= 2 * 51  # each page read at most about twice, never in a loop

    sim.clear_requests()
    again = (await sync(engine, settings))[KEY]
    assert again.status == "succeeded" and (again.totals.inserted, again.totals.updated) == (0, 0)
    # The tie (23 > 5 per page) is read with offsets inside the second, then the walk moves on.
    tie_offsets = [r.query["offset"] for r in list_requests(sim) if "lastUpdated_lte" in r.query]
    assert tie_offsets == ["0", "5", "10", "15", "20"]
    assert len(list_requests(sim)) == 1 + 5 + 1


async def test_a_tie_that_shrinks_while_read_is_read_again(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim = valomnia.sim
    second = _second(datetime.now(UTC) - timedelta(minutes=1))
    tied = [sim.insert(f"Bulk {i}", at=second)["id"] for i in range(17)]  # type: ignore[attr-defined]
    settings = make_settings(valomnia=valomnia, streams={KEY: {"page_size": 5}})
    await sync(engine, settings)
    for aid in tied[:3]:  # make the tie group's members need re-reading
        sim.update(aid, name=f"Bulk {aid} v2", at=second)  # type: ignore[attr-defined]

    moved: list[int] = []

    def move_a_read_member_out(_sim: Any, request: LoggedRequest) -> None:
        # On the second request inside the tie, a record already read leaves the group: every
        # later offset would now skip one unread record.
        if (
            request.query.get("lastUpdated_lte")
            and request.query.get("offset") == "5"
            and not moved
        ):
            moved.append(tied[0])
            sim.update(tied[0], name="Bulk 0 moved on")  # type: ignore[attr-defined]

    sim.on_request(move_a_read_member_out)
    outcome = (await sync(engine, settings))[KEY]

    assert outcome.status == "succeeded", outcome.error
    assert moved, "the scenario did not happen: no tie was read with offsets"
    tie_offsets = [r.query["offset"] for r in list_requests(sim) if "lastUpdated_lte" in r.query]
    assert tie_offsets.count("0") >= 2  # the group was read again from its start
    await assert_db_equals_source(engine, valomnia)


async def test_session_expiring_mid_sync_logs_in_again(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim = valomnia.sim
    settings = make_settings(valomnia=valomnia, streams={KEY: {"page_size": 20}})

    def expire_on_third_page(_sim: Any, request: LoggedRequest) -> None:
        if request.path.endswith("/authorities") and len(list_requests(sim)) == 3:
            sim.expire_sessions()  # type: ignore[attr-defined]

    sim.on_request(expire_on_third_page)
    outcome = (await sync(engine, settings))[KEY]

    assert outcome.status == "succeeded", outcome.error
    assert sim.login_count == 2  # type: ignore[attr-defined]
    assert 401 in [r.status for r in list_requests(sim)]
    await assert_db_equals_source(engine, valomnia)


async def test_changes_and_deletes_while_paging_are_caught_by_the_next_sync(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    sim = valomnia.sim
    settings = make_settings(valomnia=valomnia, streams={KEY: {"page_size": 20}})
    ordered = sorted(sim.truth(), key=lambda a: (a["lastUpdated"], a["id"]))  # type: ignore[attr-defined]
    deleted: list[int] = []

    def churn(_sim: Any, request: LoggedRequest) -> None:
        n = len(list_requests(sim))
        if request.path.endswith("/authorities") and n in (3, 5, 7):
            # Update records not read yet and records already read; delete a few of each.
            for record in (ordered[n * 15], ordered[n * 2], ordered[200 - n]):
                if sim.get(record["id"]) is not None:  # type: ignore[attr-defined]
                    sim.update(record["id"], name=f"{record['name']} (edited {n})")  # type: ignore[attr-defined]
            for record in (ordered[n * 10 + 1], ordered[n + 1]):
                if sim.get(record["id"]) is not None:  # type: ignore[attr-defined]
                    sim.delete(record["id"])  # type: ignore[attr-defined]
                    deleted.append(record["id"])

    remove = sim.on_request(churn)
    first = (await sync(engine, settings))[KEY]
    remove()
    second = (await sync(engine, settings))[KEY]

    assert first.status == second.status == "succeeded"
    truth = {a["id"]: a for a in sim.truth()}  # type: ignore[attr-defined]
    stored = await live_rows(engine, TABLE)
    # No delete signal exists in this API: deleted records stay until a reconcile.
    assert {k: v for k, v in stored.items() if k in truth} == truth
    assert set(stored) - set(truth) <= set(deleted)


async def test_static_header_token_instead_of_the_session_login(engine: AsyncEngine) -> None:
    from pipeline.sandbox import ValomniaSimulator, serve

    async with serve(ValomniaSimulator(authorities=40, api_token="static-token-1234")) as valomnia:
        settings = make_settings(
            valomnia=valomnia,
            valomnia_extra={"username": None, "password": None, "token": "static-token-1234"},
        )
        outcome = (await sync(engine, settings))[KEY]

        assert outcome.status == "succeeded", outcome.error
        assert valomnia.sim.login_count == 0  # type: ignore[attr-defined]
        assert all(
            r.header("authorization") == "Bearer static-token-1234" for r in valomnia.sim.requests
        )
        await assert_db_equals_source(engine, valomnia)
