"""DigiLocker: signed POST forms, issuer snapshots, doctypes per issuer, daily statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import DigiLockerSimulator, RunningSimulator, serve
from tests.helpers import make_settings, rows, scalar, sync

STREAMS = ("digilocker.issuers", "digilocker.doctypes", "digilocker.statistics")


@pytest.fixture
async def digilocker() -> AsyncIterator[RunningSimulator]:
    async with serve(DigiLockerSimulator(issuers=12, seed=61)) as running:
        yield running


def _doctypes(sim: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for issuer in sim.truth("issuers"):
        for doc in sim.truth("doctypes", orgid=issuer["orgid"]):
            out[f"{issuer['orgid']}/{doc['doctype']}"] = doc
    return out


async def assert_db_equals_source(engine: AsyncEngine, sim: Any) -> None:
    stored = {
        r["orgid"]: r for r in (await live_rows_by(engine, "digilocker.issuers", "orgid")).values()
    }
    assert stored == {i["orgid"]: i for i in sim.truth("issuers")}
    assert await live_rows_by(engine, "digilocker.doctypes", "key") == _doctypes(sim)


async def live_rows_by(engine: AsyncEngine, table: str, key: str) -> dict[str, dict[str, Any]]:
    result = await rows(engine, f"SELECT {key} AS k, data FROM {table} WHERE _deleted_at IS NULL")
    return {r.k: r.data for r in result}


async def test_first_sync_equals_the_source(
    engine: AsyncEngine, digilocker: RunningSimulator
) -> None:
    sim: Any = digilocker.sim
    outcomes = await sync(engine, make_settings(digilocker=digilocker))

    for key in STREAMS:
        assert outcomes[key].status == "succeeded", outcomes[key].error
    await assert_db_equals_source(engine, sim)
    [stats] = await rows(engine, "SELECT * FROM digilocker.statistics")
    truth = sim.statistics()
    assert stats.read_on == datetime.now(UTC).date()
    assert stats.users == int(truth["users"]) and stats.issuers == int(truth["issuers"])
    raw = truth["count_as_on"]
    assert stats.count_as_on == date(int(raw[4:]), int(raw[2:4]), int(raw[:2]))
    assert stats.data == truth


async def test_quiet_resync_writes_nothing_and_statistics_keep_one_row_per_day(
    engine: AsyncEngine, digilocker: RunningSimulator
) -> None:
    sim: Any = digilocker.sim
    settings = make_settings(digilocker=digilocker)
    await sync(engine, settings)

    quiet = await sync(engine, settings)
    for key in STREAMS:
        o = quiet[key]
        assert (o.totals.inserted, o.totals.updated, o.deleted) == (0, 0, 0), key
    assert await scalar(engine, "SELECT count(*) FROM digilocker.statistics") == 1

    tomorrow = datetime.now(UTC) + timedelta(days=1)
    sim.clock = lambda: tomorrow  # the platform has grown by tomorrow
    # Our signed timestamps must look like tomorrow's to the server too.
    tomorrows_settings = make_settings(
        digilocker=digilocker, extra={"digilocker": {"ts_offset_seconds": 86_400}}
    )
    next_day = await sync(engine, tomorrows_settings, "statistics", clock=lambda: tomorrow)
    assert next_day["digilocker.statistics"].totals.inserted == 1
    days = await rows(engine, "SELECT read_on, users FROM digilocker.statistics ORDER BY read_on")
    assert [d.read_on for d in days] == [datetime.now(UTC).date(), tomorrow.date()]
    assert days[1].users > days[0].users


async def test_issuer_and_doctype_changes_are_reflected(
    engine: AsyncEngine, digilocker: RunningSimulator
) -> None:
    sim: Any = digilocker.sim
    settings = make_settings(digilocker=digilocker)
    await sync(engine, settings)
    issuers = sim.truth("issuers")
    gone = issuers[0]["orgid"]
    sim.remove_issuer(gone)
    sim.rename_issuer(issuers[1]["orgid"], "Renamed Board of Education")
    added = sim.add_issuer()
    sim.add_doctype(issuers[2]["orgid"], "NEWDT", "New document type")
    first_doc = sim.truth("doctypes", orgid=issuers[3]["orgid"])[0]["doctype"]
    sim.remove_doctype(issuers[3]["orgid"], first_doc)

    outcomes = await sync(engine, settings, "issuers", "doctypes")

    assert outcomes["digilocker.issuers"].deleted == 1  # a snapshot: absent once is gone
    await assert_db_equals_source(engine, sim)
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM digilocker.doctypes WHERE orgid = :o AND _deleted_at IS NULL",
            o=gone,
        )
        == 0
    )  # the gone issuer's document types went with it
    assert added["orgid"] in await live_rows_by(engine, "digilocker.issuers", "orgid")


async def test_bad_hmac_and_stale_ts_fail_only_that_stream_clearly(
    engine: AsyncEngine, digilocker: RunningSimulator, soho: RunningSimulator
) -> None:
    wrong_secret = make_settings(
        soho, digilocker=digilocker, extra={"digilocker": {"client_secret": "not-the-secret"}}
    )
    outcomes = await sync(engine, wrong_secret, "issuers", "customers")
    failed = outcomes["digilocker.issuers"]
    assert failed.status == "failed" and failed.error is not None
    assert "HTTP 401" in failed.error and "hmac_mismatch" in failed.error
    assert "not-the-secret" not in failed.error
    assert outcomes["soho.customers"].status == "succeeded"

    stale = make_settings(digilocker=digilocker, extra={"digilocker": {"ts_offset_seconds": -3600}})
    failed = (await sync(engine, stale, "statistics"))["digilocker.statistics"]
    assert failed.status == "failed" and failed.error is not None
    assert "HTTP 401" in failed.error and "invalid_ts" in failed.error


async def test_the_client_secret_never_appears_anywhere(
    engine: AsyncEngine, digilocker: RunningSimulator, log_text: Callable[[], str]
) -> None:
    sim: Any = digilocker.sim
    await sync(engine, make_settings(digilocker=digilocker))
    await sync(
        engine,
        make_settings(digilocker=digilocker, extra={"digilocker": {"ts_offset_seconds": -7200}}),
    )
    text = log_text()
    assert "stream_finished" in text
    assert sim.client_secret not in text
    history = await rows(engine, "SELECT coalesce(error, '') AS e FROM pipeline.sync_runs")
    assert all(sim.client_secret not in h.e for h in history)
    for request in sim.requests:
        assert sim.client_secret not in str(request.headers) and sim.client_secret not in str(
            request.query
        )
