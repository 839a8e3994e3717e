"""Faults at the source: retried when transient, fatal with a clear message when not, and one
stream's failure never stops the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.exits import for_outcomes as exit_code
from pipeline.sandbox import HtmlPage, HttpError, RunningSimulator, Stall, TruncatedBody
from tests.helpers import live_rows, make_settings, rows, scalar, sync


async def test_429_with_retry_after_and_a_503_burst_are_survived(
    engine: AsyncEngine, soho: RunningSimulator, valomnia: RunningSimulator
) -> None:
    soho.sim.faults.add(HttpError(429, retry_after="1"), times=1, after=2)
    soho.sim.faults.add(HttpError(503), times=3, after=1)
    http_date = format_datetime(datetime.now(UTC) + timedelta(seconds=1), usegmt=True)
    valomnia.sim.faults.add(HttpError(429, retry_after=http_date), times=1, path_prefix="/api")
    valomnia.sim.faults.add(HttpError(502), times=2, path_prefix="/api")

    outcomes = await sync(engine, make_settings(soho, valomnia))

    assert [o.status for o in outcomes.values()] == ["succeeded", "succeeded"]
    assert len(await live_rows(engine, "soho.customers")) == 120
    assert len(await live_rows(engine, "valomnia.authorities")) == 230
    statuses = [r.status for r in soho.sim.requests]
    assert statuses.count(429) == 1 and statuses.count(503) == 3


async def test_malformed_bodies_are_retried_never_taken_for_an_empty_page(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    soho.sim.faults.add(TruncatedBody(), times=1, after=1, path_prefix="/api/v1/customers")
    soho.sim.faults.add(HtmlPage(200), times=1, after=2, path_prefix="/api/v1/customers")
    soho.sim.faults.add(Stall(2.0), times=1, after=3, path_prefix="/api/v1/customers")

    settings = make_settings(soho, soho_extra={"timeout_seconds": 0.5})
    outcome = (await sync(engine, settings))["soho.customers"]

    assert outcome.status == "succeeded", outcome.error
    assert len(await live_rows(engine, "soho.customers")) == 120


async def test_retry_budget_exhausted_fails_the_stream_and_keeps_state(
    engine: AsyncEngine, soho: RunningSimulator, valomnia: RunningSimulator
) -> None:
    settings = make_settings(soho, valomnia, soho_extra={"max_retries": 2})
    await sync(engine, settings)
    before = await rows(engine, "SELECT stream, watermark FROM pipeline.stream_state ORDER BY 1")
    soho.sim.faults.add(HttpError(503), times=None)

    outcomes = await sync(engine, settings)

    failed = outcomes["soho.customers"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert "soho.customers" in failed.error and "/customers" in failed.error
    assert "after 3 attempts" in failed.error and "503" in failed.error
    assert soho.sim.token not in failed.error  # type: ignore[attr-defined]
    assert outcomes["valomnia.authorities"].status == "succeeded"
    assert (
        await rows(engine, "SELECT stream, watermark FROM pipeline.stream_state ORDER BY 1")
        == before
    )
    history = await rows(
        engine,
        "SELECT status, error FROM pipeline.sync_runs WHERE stream = 'soho.customers' ORDER BY id",
    )
    assert [h.status for h in history] == ["succeeded", "failed"]
    assert history[-1].error == failed.error
    assert exit_code(list(outcomes.values())) == 1


async def test_bad_token_fails_only_that_stream_with_a_message_naming_the_source(
    engine: AsyncEngine, soho: RunningSimulator, valomnia: RunningSimulator
) -> None:
    settings = make_settings(soho, valomnia, soho_extra={"token": "0" * 32})

    outcomes = await sync(engine, settings)

    failed = outcomes["soho.customers"]
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith("soho.customers:")
    assert "HTTP 401" in failed.error and "not authenticated" in failed.error
    assert "credentials" in failed.error  # what to do about it
    assert [r.status for r in soho.sim.requests] == [401]  # 401 is not retried
    assert outcomes["valomnia.authorities"].status == "succeeded"
    assert len(await live_rows(engine, "valomnia.authorities")) == 230


async def test_wrong_valomnia_password_is_a_clear_auth_error(
    engine: AsyncEngine, valomnia: RunningSimulator
) -> None:
    settings = make_settings(valomnia=valomnia, valomnia_extra={"password": "wrong-password"})

    outcome = (await sync(engine, settings))["valomnia.authorities"]

    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "j_spring_security_check" in outcome.error and "username and password" in outcome.error
    assert "wrong-password" not in outcome.error


async def test_records_that_cannot_be_loaded_are_quarantined_and_the_rest_loads(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    sim = soho.sim
    ids = sim.ids  # type: ignore[attr-defined]
    store = sim._customers  # type: ignore[attr-defined]
    store[ids[5]]["updated_at"] = "yesterday afternoon"
    store[ids[6]]["profile"]["birth_date"] = "31/12/1980"
    store[ids[7]]["created_at"] = "2024-01-01T10:00:00"  # no time zone
    del store[ids[8]]["id"]

    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    assert outcome.status == "succeeded"
    assert outcome.totals.quarantined == 4 and outcome.totals.inserted == 116
    assert exit_code([outcome]) == 3
    quarantined = await rows(
        engine, "SELECT record_key, reason, raw FROM pipeline.quarantine ORDER BY record_key"
    )
    reasons = {q.record_key: q.reason for q in quarantined}
    assert "not an ISO-8601 timestamp" in reasons[str(ids[5])]
    assert "profile.birth_date" in reasons[str(ids[6])]
    assert "without a time zone" in reasons[str(ids[7])]
    assert "missing primary key" in reasons[None]
    assert all(q.raw.startswith("{") for q in quarantined)
    assert await scalar(engine, "SELECT quarantined FROM pipeline.sync_runs") == 4
    # Quarantined records exist at the source: a complete scan does not count them absent.
    again = (await sync(engine, make_settings(soho)))["soho.customers"]
    assert again.deleted == 0
    assert await scalar(engine, "SELECT count(*) FROM soho.customers WHERE _absent_scans > 0") == 0


async def test_a_second_concurrent_run_of_a_stream_skips_it(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    soho.sim.latency = 0.05
    settings = make_settings(soho, soho_extra={"max_concurrency": 1})

    first, second = await asyncio.gather(sync(engine, settings), sync(engine, settings))

    statuses = sorted([first["soho.customers"].status, second["soho.customers"].status])
    assert statuses == ["skipped", "succeeded"]
    skipped = next(o for o in (first, second) if o["soho.customers"].status == "skipped")
    assert "lock" in (skipped["soho.customers"].error or "")
    # The skip is recorded too, naming the run that held the stream.
    statuses_recorded = await rows(
        engine, "SELECT status, error FROM pipeline.sync_runs ORDER BY status"
    )
    assert [r.status for r in statuses_recorded] == ["skipped", "succeeded"]
    assert "another run of this stream holds its lock" in statuses_recorded[0].error
