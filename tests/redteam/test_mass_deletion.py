"""Finding 9: a source that suddenly lists 1 of 100 records, with detail lookups answering 404,
soft-deleted 99 rows in one run, exit 0, no warning. Now those deletions are held back (the run
ends `held`, exit 5, `status` and the dashboard say so) until `pipeline reconcile STREAM
--confirm-deletes` applies them. Every stream kind is held to it in the stream contract
(`test_a_source_that_suddenly_lists_a_few_of_its_records_deletes_nothing_until_confirmed`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import exits
from pipeline.dashboard.queries import overview
from pipeline.sandbox import RunningSimulator, SohoSimulator, serve
from tests.helpers import make_settings, rows, run_cli, scalar
from tests.redteam.cli import soho_config

LIVE = "SELECT count(*) FROM soho.customers WHERE _deleted_at IS NULL"


async def test_ninety_nine_of_a_hundred_vanishing_are_held_until_confirmed(
    engine: AsyncEngine,
    on_test_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = SohoSimulator(customers=100, seed=301)
    async with serve(sim) as soho:
        config = _config(tmp_path, soho)
        assert await run_cli("--config", str(config), "sync") == exits.OK
        for customer_id in list(sim.ids)[1:]:
            sim.delete_customer(customer_id)  # listed no more, and 404 on its detail

        assert await run_cli("--config", str(config), "sync") == exits.HELD == 5
        summary = capsys.readouterr().out
        assert await scalar(engine, LIVE) == 100  # nothing deleted
        [run] = await rows(
            engine,
            "SELECT status, held_deletes, deleted, error FROM pipeline.sync_runs "
            "ORDER BY id DESC LIMIT 1",
        )
        assert (run.status, run.held_deletes, run.deleted) == ("held", 99, 0)
        assert "max_delete_fraction (0.5)" in run.error and "--confirm-deletes" in summary

        assert await run_cli("--config", str(config), "status", "--json") == exits.FAILED
        statuses = json.loads(capsys.readouterr().out)
        [status] = [s for s in statuses if s["key"] == "soho.customers"]
        assert status["last_run_status"] == "held" and status["needs_attention"]
        page = await overview(engine, make_settings(soho), datetime.now(UTC))
        [cell] = [c for row in page.instances for c in row.cells if c.key == "soho.customers"]
        assert cell.state == "held" and page.attention == 1

        assert await run_cli("--config", str(config), "sync") == exits.HELD  # still held
        code = await run_cli(
            "--config", str(config), "reconcile", "soho.customers", "--confirm-deletes"
        )
        assert code == exits.OK
    assert await scalar(engine, LIVE) == 1


async def test_a_stream_may_allow_more_and_a_few_deletions_pass(
    engine: AsyncEngine, on_test_database: str, tmp_path: Path
) -> None:
    sim = SohoSimulator(customers=40, seed=302)
    async with serve(sim) as soho:
        config = _config(tmp_path, soho, max_delete_fraction=1.0)
        assert await run_cli("--config", str(config), "sync") == exits.OK
        ids = list(sim.ids)
        for customer_id in ids[:30]:
            sim.delete_customer(customer_id)
        assert await run_cli("--config", str(config), "sync") == exits.OK  # the guard is off
        assert await scalar(engine, LIVE) == 10
        config = _config(tmp_path, soho)
        for customer_id in ids[30:34]:
            sim.delete_customer(customer_id)  # 4 of 10: under half
        assert await run_cli("--config", str(config), "sync") == exits.OK
    assert await scalar(engine, LIVE) == 6


def _config(tmp_path: Path, soho: RunningSimulator, **stream: float) -> Path:
    return soho_config(tmp_path, soho, streams=dict(stream))
