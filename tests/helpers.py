"""Helpers the tests share: settings for the simulators, a sync call, reading tables back."""

from __future__ import annotations

import os
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings, settings_from_mapping
from pipeline.logs import secrets
from pipeline.runner import Runner, StreamOutcome, select_streams
from pipeline.sandbox import RunningSimulator
from pipeline.sources import SOURCES


def make_settings(
    soho: RunningSimulator | None = None,
    valomnia: RunningSimulator | None = None,
    *,
    soho_extra: dict[str, Any] | None = None,
    valomnia_extra: dict[str, Any] | None = None,
    afosto: RunningSimulator | None = None,
    afosto_extra: dict[str, Any] | None = None,
    streams: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Settings pointing at running simulators, validated like a pipeline.toml."""
    sources: dict[str, Any] = {}
    fast = {"backoff_seconds": 0.01, "timeout_seconds": 5}
    if soho is not None:
        sources["soho"] = {
            "base_url": f"{soho.url}/api/v1",
            "token": soho.sim.token,  # type: ignore[attr-defined]
            **fast,
            **(soho_extra or {}),
        }
    if valomnia is not None:
        sim = valomnia.sim
        sources["valomnia"] = {
            "base_url": valomnia.url,
            "username": sim.username,  # type: ignore[attr-defined]
            "password": sim.password,  # type: ignore[attr-defined]
            **fast,
            **(valomnia_extra or {}),
        }
    if afosto is not None:
        sources["afosto"] = {
            "base_url": afosto.url,
            "token": afosto.sim.token,  # type: ignore[attr-defined]
            **fast,
            **(afosto_extra or {}),
        }
    for key, body in (streams or {}).items():
        source, stream = key.split(".")
        sources[source].setdefault("streams", {})[stream] = body
    settings = settings_from_mapping({"sources": sources}, os.environ, SOURCES, label="(test)")
    secrets.add(settings.secret_values())
    return settings


async def sync(
    engine: AsyncEngine, settings: Settings, *names: str, run_id: uuid.UUID | None = None
) -> dict[str, StreamOutcome]:
    outcomes = await Runner(engine, run_id=run_id).run(select_streams(settings, names))
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
