"""Helpers the tests share: settings for the simulators, a sync call, reading tables back."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings, settings_from_mapping
from pipeline.demo import source_settings
from pipeline.logs import secrets
from pipeline.run import Runner, StreamOutcome
from pipeline.sandbox import RunningSimulator
from pipeline.sources import SOURCES
from pipeline.targets import select_streams
from tests.source_limits import expect_settings


def make_settings(
    soho: RunningSimulator | None = None,
    valomnia: RunningSimulator | None = None,
    *,
    afosto: RunningSimulator | None = None,
    sparkfly: RunningSimulator | None = None,
    digilocker: RunningSimulator | None = None,
    soho_extra: dict[str, Any] | None = None,
    valomnia_extra: dict[str, Any] | None = None,
    afosto_extra: dict[str, Any] | None = None,
    extra: dict[str, dict[str, Any]] | None = None,
    streams: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Settings pointing at running simulators, validated like a pipeline.toml."""
    running = {
        "soho": soho,
        "valomnia": valomnia,
        "afosto": afosto,
        "sparkfly": sparkfly,
        "digilocker": digilocker,
    }
    extras = {
        "soho": soho_extra,
        "valomnia": valomnia_extra,
        "afosto": afosto_extra,
        **(extra or {}),
    }
    fast = {"backoff_seconds": 0.01, "timeout_seconds": 5}
    sources: dict[str, Any] = {
        name: {**source_settings(name, sim), **fast, **(extras.get(name) or {})}
        for name, sim in running.items()
        if sim is not None
    }
    for key, body in (streams or {}).items():
        source, stream = key.split(".")
        sources[source].setdefault("streams", {})[stream] = body
    settings = settings_from_mapping({"sources": sources}, os.environ, SOURCES, label="(test)")
    secrets.add(settings.secret_values())
    expect_settings(settings, running)  # the test is held to these limits (tests/conftest.py)
    return settings


async def sync(
    engine: AsyncEngine,
    settings: Settings,
    *names: str,
    run_id: uuid.UUID | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, StreamOutcome]:
    runner = (
        Runner(engine, run_id=run_id)
        if clock is None
        else Runner(engine, run_id=run_id, clock=clock)
    )
    outcomes = await runner.run(select_streams(settings, names))
    return {o.key: o for o in outcomes}


async def live_rows(engine: AsyncEngine, table: str) -> dict[Any, dict[str, Any]]:
    """The stored records (the `data` column) of live rows, by primary key."""
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.text(f"SELECT id, data FROM {table} WHERE _deleted_at IS NULL")
        )
        return {row.id: row.data for row in result}


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.text(sql), params))


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> int:
    """Run a statement that changes data, committed (e.g. to play a warehouse losing rows)."""
    async with engine.begin() as conn:
        return (await conn.execute(sa.text(sql), params)).rowcount
