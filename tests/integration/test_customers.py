"""Soho customers: a full-scan stream, incremental on the write side, deletes confirmed."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import HttpError, RunningSimulator
from tests.helpers import live_rows, make_settings, rows, scalar, sync

TABLE = "soho.customers"


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def assert_db_equals_source(engine: AsyncEngine, soho: RunningSimulator) -> None:
    truth = {c["id"]: c for c in soho.sim.truth()}  # type: ignore[attr-defined]
    stored = await live_rows(engine, TABLE)
    assert stored.keys() == truth.keys()
    assert stored == truth  # every field of every record, nested profile included


async def test_first_sync_loads_every_customer_with_typed_columns(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.inserted == 120 and outcome.totals.quarantined == 0
    assert outcome.pages == 5  # 120 customers, 25 per page
    await assert_db_equals_source(engine, soho)
    truth = {c["id"]: c for c in soho.sim.truth()}  # type: ignore[attr-defined]
    for row in await rows(engine, f"SELECT * FROM {TABLE}"):
        record = truth[row.id]
        profile = record["profile"]
        assert row.email == record["email"]
        assert row.created_at == _ts(record["created_at"])
        assert row.updated_at == _ts(record["updated_at"])
        assert row.profile_id == profile["id"]
        assert row.organisation_id == profile["organisation_id"]
        assert row.birth_date == date.fromisoformat(profile["birth_date"])
        assert row.postal_code == profile["postal_code"]
        assert row.building_addon == profile.get("building_addon")
        assert row.profile_updated_at == _ts(profile["updated_at"])
        assert row._cursor == max(_ts(record["updated_at"]), _ts(profile["updated_at"]))
        assert row._deleted_at is None


async def test_quiet_resync_writes_nothing(engine: AsyncEngine, soho: RunningSimulator) -> None:
    settings = make_settings(soho)
    await sync(engine, settings)
    before = await rows(engine, f"SELECT id, xmin::text AS version, _synced_at FROM {TABLE}")

    outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "succeeded"
    assert (outcome.totals.inserted, outcome.totals.updated, outcome.deleted) == (0, 0, 0)
    assert outcome.totals.unchanged == 120
    after = await rows(engine, f"SELECT id, xmin::text AS version, _synced_at FROM {TABLE}")
    assert sorted(before) == sorted(after)  # not one row rewritten


async def test_changes_and_inserts_are_picked_up_exactly(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = make_settings(soho)
    await sync(engine, settings)
    sim = soho.sim
    ids = sim.ids  # type: ignore[attr-defined]
    run_id = uuid.uuid4()
    sim.update_customer(ids[3], email="new.address@example.org")  # type: ignore[attr-defined]
    sim.update_customer(ids[40], profile={"city": "Brugge"})  # type: ignore[attr-defined]
    sim.update_customer(ids[99], profile={"building_addon": None})  # type: ignore[attr-defined]
    new = [sim.insert_customer()["id"] for _ in range(3)]  # type: ignore[attr-defined]

    outcome = (await sync(engine, settings, run_id=run_id))["soho.customers"]

    assert (outcome.totals.inserted, outcome.totals.updated) == (3, 3)
    await assert_db_equals_source(engine, soho)
    changed = await rows(engine, f"SELECT id FROM {TABLE} WHERE _run_id = :run", run=run_id)
    assert {r.id for r in changed} == {ids[3], ids[40], ids[99], *new}


async def test_watermark_is_the_latest_change_and_never_after_the_run_start(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    sim = soho.sim
    profile_edit_time = datetime(2030, 1, 1, tzinfo=UTC)  # the source's clock runs ahead
    sim.update_customer(sim.ids[0], profile={"city": "Mol"}, at=profile_edit_time)  # type: ignore[attr-defined]
    started = datetime.now(UTC)

    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    watermark = await scalar(
        engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = 'soho.customers'"
    )
    assert outcome.watermark == watermark
    assert started <= watermark <= datetime.now(UTC)  # capped at the run's start, not 2030
    sim.faults.add(HttpError(503), times=None, path_prefix="/api/v1/customers")
    failed = (await sync(engine, make_settings(soho)))["soho.customers"]
    assert failed.status == "failed"
    assert await scalar(engine, "SELECT watermark FROM pipeline.stream_state") == watermark


async def test_deleted_customer_is_marked_after_a_404_and_cleared_when_back(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = make_settings(soho)
    await sync(engine, settings)
    sim = soho.sim
    victim = sim.ids[10]  # type: ignore[attr-defined]
    saved = sim.delete_customer(victim)  # type: ignore[attr-defined]

    outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.deleted == 1
    deleted_at = await scalar(engine, f"SELECT _deleted_at FROM {TABLE} WHERE id = :id", id=victim)
    assert deleted_at is not None
    await assert_db_equals_source(engine, soho)

    sim._store(saved)  # type: ignore[attr-defined]  # restored (e.g. an undo at the source)
    outcome = (await sync(engine, settings))["soho.customers"]
    assert outcome.totals.updated == 1
    assert (
        await scalar(engine, f"SELECT _deleted_at FROM {TABLE} WHERE id = :id", id=victim) is None
    )
    await assert_db_equals_source(engine, soho)


async def test_page_drift_never_marks_a_live_customer_deleted(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    """Deleting records while the scan pages shifts live records onto pages already read."""
    settings = make_settings(soho, soho_extra={"max_concurrency": 1})
    await sync(engine, settings)
    sim = soho.sim
    ids = sim.ids  # type: ignore[attr-defined]
    doomed = ids[:6]

    def delete_early_records(_sim: object, request: object) -> None:
        if (
            getattr(request, "path", "").endswith("/customers")
            and getattr(request, "query", {}).get("page") == "3"
        ):
            for cid in doomed:
                if sim.get(cid) is not None:  # type: ignore[attr-defined]
                    sim.delete_customer(cid)  # type: ignore[attr-defined]

    remove = sim.on_request(delete_early_records)
    outcome = (await sync(engine, settings))["soho.customers"]
    remove()

    assert outcome.status == "succeeded"
    # Page 1 (with the doomed six) was read before they were deleted, so this scan saw them.
    # Six live customers slid from page 3 onto page 2, already read: the scan missed them, the
    # detail endpoint proved them alive, and nothing live is marked deleted.
    probed = {r.path.rsplit("/", 1)[-1] for r in sim.requests if r.path.count("/") == 4}
    assert probed == {str(cid) for cid in ids[50:56]}
    assert outcome.deleted == 0
    assert await scalar(engine, f"SELECT count(*) FROM {TABLE} WHERE _deleted_at IS NOT NULL") == 0

    outcome = (await sync(engine, settings))["soho.customers"]
    assert outcome.deleted == 6
    deleted = {
        r.id for r in await rows(engine, f"SELECT id FROM {TABLE} WHERE _deleted_at IS NOT NULL")
    }
    assert deleted == set(doomed)
    await assert_db_equals_source(engine, soho)


async def test_absence_without_a_404_needs_two_complete_scans(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    settings = make_settings(soho, soho_extra={"max_retries": 0})
    await sync(engine, settings)
    sim = soho.sim
    victim = sim.ids[50]  # type: ignore[attr-defined]
    sim.delete_customer(victim)  # type: ignore[attr-defined]
    # The detail endpoint is down: absence alone is not proof.
    sim.faults.add(HttpError(500), times=None, path_prefix=f"/api/v1/customers/{victim}")

    first = (await sync(engine, settings))["soho.customers"]
    assert first.status == "succeeded" and first.deleted == 0
    assert await scalar(engine, f"SELECT _absent_scans FROM {TABLE} WHERE id = :id", id=victim) == 1

    second = (await sync(engine, settings))["soho.customers"]
    assert second.deleted == 1
    await assert_db_equals_source(engine, soho)


async def test_records_inserted_during_the_scan_beyond_the_last_page_are_read(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    sim = soho.sim
    added: list[int] = []

    def insert_once(_sim: object, request: object) -> None:
        if not added and getattr(request, "query", {}).get("page") == "2":
            added.extend(sim.insert_customer()["id"] for _ in range(30))  # type: ignore[attr-defined]

    sim.on_request(insert_once)
    outcome = (await sync(engine, make_settings(soho, soho_extra={"max_concurrency": 1})))[
        "soho.customers"
    ]

    assert outcome.status == "succeeded"
    assert len(added) == 30
    await assert_db_equals_source(engine, soho)
