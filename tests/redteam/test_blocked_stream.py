"""Finding 6: a stream could be blocked silently. Any login may take a stream's advisory lock
(`pg_advisory_lock` needs no privilege); `sync` then skipped it, exited 0 and wrote no
`sync_runs` row, so monitoring saw success until the stream turned stale. Now the skip is a
row naming the lock's holder, a metric, exit code 4, and `status` calls for attention."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import exits, metrics
from pipeline.db import plain_url
from pipeline.sandbox import RunningSimulator
from tests.helpers import rows, run_cli
from tests.redteam.cli import soho_config
from tests.roles import login_in

LOCK = "SELECT pg_advisory_lock(hashtextextended('pipeline.stream:soho.customers', 0))"


@pytest.fixture
def config(tmp_path: Path, on_test_database: str, soho: RunningSimulator) -> Path:
    return soho_config(tmp_path, soho)


async def test_a_stream_a_stranger_locked_is_recorded_skipped_counted_and_exits_4(
    engine: AsyncEngine, database_url: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = metrics.reset()
    async with login_in(database_url, None) as stranger:
        holder = await asyncpg.connect(
            plain_url(stranger), server_settings={"application_name": "bi extract"}
        )
        try:
            await holder.execute(LOCK)
            pid = holder.get_server_pid()
            code = await run_cli("--config", str(config), "sync")
            sync_out = capsys.readouterr().out
            status_code = await run_cli("--config", str(config), "status", "--json")
            status_out = capsys.readouterr().out
        finally:
            await holder.close()

    assert code == exits.SKIPPED == 4
    assert "skipped" in sync_out and f"backend pid {pid}" in sync_out
    [run] = await rows(engine, "SELECT status, error FROM pipeline.sync_runs")
    assert run.status == "skipped"
    assert f"backend pid {pid}" in run.error and "pipeline_test_login_" in run.error
    assert "no run of this stream is recorded" in run.error
    assert f"pg_terminate_backend({pid})" in run.error
    skipped = registry.runs.labels("soho.customers", "soho", "sync", "skipped")
    assert skipped._value.get() == 1  # type: ignore[attr-defined]
    assert status_code == exits.FAILED
    assert '"last_run_status": "skipped"' in status_out
    assert '"needs_attention": true' in status_out

    # The neighbour gone, the stream runs; and its last run is no longer the skip.
    assert await run_cli("--config", str(config), "sync") == exits.OK
    assert await run_cli("--config", str(config), "status") == exits.OK
