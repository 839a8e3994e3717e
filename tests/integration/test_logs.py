"""Logs: JSON lines carrying run id and stream; no secret anywhere (logs, run history, errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.logs import configure_logging, get_logger, secrets
from pipeline.sandbox import HttpError, LoggedRequest, RunningSimulator
from tests.helpers import make_settings, rows, sync


async def test_every_line_of_a_run_carries_run_id_and_stream_and_no_secret(
    engine: AsyncEngine,
    soho: RunningSimulator,
    valomnia: RunningSimulator,
    log_text: Callable[[], str],
) -> None:
    def expire_once(sim: Any, request: LoggedRequest) -> None:
        if request.path.endswith("/authorities") and sim.login_count == 1:
            sim.expire_sessions()  # a re-login mid-run: the password goes over the wire twice

    valomnia.sim.on_request(expire_once)
    settings = make_settings(
        soho,
        valomnia,
        soho_extra={"max_retries": 1},
        streams={"valomnia.authorities": {"page_size": 50}},
    )
    # An error body that quotes the token back must not leak it either.
    quoting_body = f'{{"message": "bad token {soho.sim.token}"}}'.encode()  # type: ignore[attr-defined]
    soho.sim.faults.add(HttpError(503, body=quoting_body), times=None)

    outcomes = await sync(engine, settings)

    assert outcomes["soho.customers"].status == "failed"
    assert outcomes["valomnia.authorities"].status == "succeeded"
    assert valomnia.sim.login_count == 2  # type: ignore[attr-defined]
    text = log_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    stream_lines = [line for line in lines if line.get("stream")]
    assert {line["event"] for line in stream_lines} >= {
        "stream_started",
        "page_loaded",
        "stream_finished",
        "http_retry",
    }
    for line in stream_lines:
        assert line["run_id"] and line["source"] in ("soho", "valomnia")
    secret_values = [soho.sim.token, valomnia.sim.password]  # type: ignore[attr-defined]
    for value in secret_values:
        assert value not in text
        history = await rows(engine, "SELECT coalesce(error, '') AS error FROM pipeline.sync_runs")
        assert all(value not in h.error for h in history)
        assert value not in (outcomes["soho.customers"].error or "")
    assert "***" in text  # the quoted token was there, and was masked


def test_redaction_of_secret_keys_and_known_values(log_text: Callable[[], str]) -> None:
    secrets.add(["s3cr3t-t0ken-value"])
    log = get_logger("test")
    log.info(
        "request",
        headers={"Authorization": "Bearer abc", "Accept": "application/json"},
        token="plain",
        detail="server said: s3cr3t-t0ken-value is wrong",
        nested=[{"cookie": "JSESSIONID=1"}],
    )
    try:
        raise ValueError("boom s3cr3t-t0ken-value")
    except ValueError:
        log.exception("failed")
    text = log_text()
    assert (
        "s3cr3t-t0ken-value" not in text and "Bearer abc" not in text and "JSESSIONID=1" not in text
    )
    first = json.loads(text.splitlines()[0])
    assert first["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert first["token"] == "***"
    assert first["detail"] == "server said: *** is wrong"


def test_console_format_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "info")
    with structlog.contextvars.bound_contextvars(run_id="r-1", stream="customers"):
        get_logger("t").info("page_loaded", records=25)
    configure_logging("json", "warning")
    line = capsys.readouterr().err
    assert "page_loaded" in line and "records=25" in line and "run_id=r-1" in line
    assert not line.lstrip().startswith("{")


async def test_a_secret_echoed_inside_a_record_is_masked_in_the_quarantine(
    engine: AsyncEngine, soho: RunningSimulator
) -> None:
    sim: Any = soho.sim
    victim = sim.ids[3]
    sim._customers[victim]["updated_at"] = f"not a time {sim.token}"  # a source echoing our token

    outcome = (await sync(engine, make_settings(soho)))["soho.customers"]

    assert outcome.totals.quarantined == 1
    [row] = await rows(engine, "SELECT reason, raw FROM pipeline.quarantine")
    assert sim.token not in row.raw and sim.token not in row.reason
    assert "***" in row.raw
