"""Finding 1: any login could abort any queue job. `NOTIFY` needs no privilege, procrastinate's
worker cancelled the job an `abort_job_requested` payload named, and a payload that was not
JSON ended its listener and so the worker. Now a worker acts only on an abort recorded in the
job table, which only a role that may update it can write, and the stopped run says who."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db import plain_url
from pipeline.sandbox import SohoSimulator
from tests.queue_procs import (
    Processes,
    at_least,
    finished_jobs,
    jobs,
    pages_running,
    queue_processes,
    runs_of,
    slow_valomnia,
    until,
)
from tests.roles import login_in

CHANNEL = "procrastinate_queue_v1#streams"
STREAM = "valomnia.authorities"
QUEUE_PATH = {"search_path": "pipeline_queue"}


async def _notify(url: str, payloads: list[str]) -> None:
    conn = await asyncpg.connect(plain_url(url))
    try:
        for payload in payloads:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
    finally:
        await conn.close()


def _forged(job_id: int) -> list[str]:
    """Abort requests for the running job and its neighbours, and payloads no worker sends."""
    aborts = [
        json.dumps({"type": "abort_job_requested", "job_id": job_id + d}) for d in range(-2, 3)
    ]
    noise = [
        "not json",
        "{}",
        "[]",
        "null",
        '{"type": "abort_job_requested"}',
        '{"type": "abort_job_requested", "job_id": "1"}',
        '{"type": "abort_job_requested", "job_id": 1e999}',
        '{"type": "job_inserted", "job_id": 1}',
        "[" * 5000,
        "x" * 7000,
    ]
    return aborts + noise + aborts


@contextlib.asynccontextmanager
async def _job_running(
    engine: AsyncEngine, database_url: str, tmp_path: Path, seed: int
) -> AsyncIterator[tuple[Processes, Any, Any]]:
    """A worker, and the Valomnia stream's job running on it two pages in: (its processes,
    the worker, the job)."""
    async with queue_processes(
        tmp_path, database_url, SohoSimulator(customers=20, seed=seed), slow_valomnia(seed + 1)
    ) as procs:
        worker = await procs.worker()
        assert (await procs.run("sync", "--no-wait", STREAM))[0] == 0
        await until(lambda: at_least(pages_running(engine, STREAM), 2), what="2 pages", seconds=60)
        [job] = await jobs(engine)
        assert job.status == "doing"
        yield procs, worker, job


async def test_a_notify_from_any_login_neither_aborts_a_job_nor_stops_the_worker(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with _job_running(engine, database_url, tmp_path, 101) as (procs, worker, job):
        async with (
            login_in(database_url, None) as stranger,
            login_in(database_url, "pipeline_analyst") as analyst,
        ):
            for url in (stranger, analyst):
                await _notify(url, _forged(job.id))
        finished = await until(lambda: finished_jobs(engine), what="the job", seconds=90)
        assert [j.status for j in finished] == ["succeeded"], procs.all_output()
        assert worker.returncode is None  # still serving
        output = procs.output(worker)
    assert "queue_notifications_ignored" in output  # the noise was seen, and said so once
    assert output.count("queue_notifications_ignored") == 1
    assert "side_task_failed" not in output.lower() and "worker_lost_database" not in output
    [run] = await runs_of(engine, STREAM)
    assert run.status == "succeeded", run.error


@pytest.mark.parametrize("role", [None, "pipeline_analyst", "pipeline_dashboard"])
async def test_no_reader_or_stranger_can_record_an_abort(
    database_url: str, role: str | None
) -> None:
    async with login_in(database_url, role) as url:
        # procrastinate's functions name their tables unqualified, as its own connections do.
        conn = await asyncpg.connect(plain_url(url), server_settings=QUEUE_PATH)
        try:
            for statement in (
                "SELECT pipeline_queue.procrastinate_cancel_job_v1(1, true, false)",
                "UPDATE pipeline_queue.procrastinate_jobs SET abort_requested = true",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()


async def test_an_abort_recorded_in_the_job_table_stops_the_run_and_names_who_asked(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    async with _job_running(engine, database_url, tmp_path, 103) as (procs, worker, job):
        operator = await asyncpg.connect(
            plain_url(database_url),
            server_settings={**QUEUE_PATH, "application_name": "ops console"},
        )
        try:
            await operator.execute(
                "SELECT pipeline_queue.procrastinate_cancel_job_v1($1, true, false)", job.id
            )
        finally:
            await operator.close()

        async def aborted() -> bool:
            return [j.status for j in await jobs(engine)] == ["aborted"]

        await until(aborted, what="the job aborted", seconds=30)
        assert worker.returncode is None, procs.all_output()
    [run] = await runs_of(engine, STREAM)
    assert run.status == "interrupted"
    assert f"abort_requested was set on queue job {job.id}" in run.error
    assert "by role 'postgres'" in run.error and "application 'ops console'" in run.error
