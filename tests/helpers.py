"""Helpers the tests share: settings for the simulators, a sync call, reading tables back."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings, settings_from_mapping
from pipeline.logs import secrets
from pipeline.run import Runner, StreamOutcome
from pipeline.sandbox import SANDBOXES, RunningAccounts, RunningSimulator
from pipeline.sources import SOURCES
from pipeline.targets import select_streams
from tests.source_limits import expect_settings


def make_settings(
    *running: RunningSimulator,
    extra: dict[str, dict[str, Any]] | None = None,
    streams: dict[str, dict[str, Any]] | None = None,
    **by_source: RunningSimulator | dict[str, Any] | None,
) -> Settings:
    """Settings pointing at running simulators, validated like a pipeline.toml.

    Each simulator gets its source's table (`SandboxSource.settings`, from the registry), with
    fast retries. Give simulators positionally (each is known by its source, `sim.name`) or by
    source name (`<source>=running`; None leaves the source out). `<source>_extra={...}` or
    `extra={"<source>": {...}}` adds or overrides keys of that source's table; `streams` sets
    stream tables by `source.stream`."""
    sims: dict[str, RunningSimulator | None] = {}
    extras: dict[str, dict[str, Any]] = {}
    for sim in running:
        _put(sims, sim.sim.name, sim)
    for key, value in by_source.items():
        if key in SANDBOXES and not isinstance(value, dict):
            _put(sims, key, value)
        elif key.endswith("_extra") and key.removesuffix("_extra") in SANDBOXES:
            extras[key.removesuffix("_extra")] = value if isinstance(value, dict) else {}
        else:
            raise TypeError(
                f"make_settings() got {key}=; give a source's simulator as <source>= or its "
                f"extra keys as <source>_extra=; sources: {', '.join(SANDBOXES)}"
            )
    for name, body in (extra or {}).items():
        extras[name] = {**extras.get(name, {}), **body}
    fast = {"backoff_seconds": 0.01, "timeout_seconds": 5}
    sources: dict[str, Any] = {
        name: {**SANDBOXES[name].settings(sim), **fast, **extras.get(name, {})}
        for name, sim in sims.items()
        if sim is not None
    }
    for key, body in (streams or {}).items():
        source, stream = key.split(".")
        sources[source].setdefault("streams", {})[stream] = body
    settings = settings_from_mapping({"sources": sources}, os.environ, SOURCES, label="(test)")
    secrets.add(settings.secret_values())
    expect_settings(settings, sims)  # the test is held to these limits (tests/conftest.py)
    return settings


def _put(
    sims: dict[str, RunningSimulator | None], name: str, running: RunningSimulator | None
) -> None:
    if name not in SANDBOXES:
        raise TypeError(f"make_settings(): no source {name!r} in the registry")
    if sims.get(name) is not None and running is not None:
        raise TypeError(f"make_settings(): two simulators for source {name!r}")
    sims[name] = running


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


def instance_settings(
    instances: dict[str, RunningSimulator] | RunningAccounts,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Settings with several accounts of one API: `[sources.<instance>]` with `type` = the
    simulator's source, each pointing at its own running simulator, or at its account of one
    server of several (a `RunningAccounts`: one instance per account, named after it; or pick
    accounts with `running.account(name)`). Each account is held to its instance's limits and
    the server to their sum (tests/source_limits.py)."""
    if isinstance(instances, RunningAccounts):
        instances = instances.each()
    fast = {"backoff_seconds": 0.01, "timeout_seconds": 5}
    sources = {
        name: {
            "type": running.sim.name,
            **SANDBOXES[running.sim.name].settings(running),
            **fast,
            **(extra or {}).get(name, {}),
        }
        for name, running in instances.items()
    }
    settings = settings_from_mapping({"sources": sources}, os.environ, SOURCES, label="(test)")
    secrets.add(settings.secret_values())
    expect_settings(settings, dict(instances))
    return settings


async def run_cli(*argv: str) -> int:
    """The `pipeline` command in this process (its own event loop, in a thread): its exit code;
    what it printed is in pytest's capture."""
    from pipeline.cli import main

    return await asyncio.to_thread(main, list(argv))


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A pipeline.toml of `tables` by dotted name (`"sources.<name>.streams.<stream>"`), for
    tests that run the `pipeline` command. Values as JSON writes them are TOML's too."""
    lines = []
    for name, body in tables.items():
        lines.append(f"[{name}]")
        lines += [
            f"{key} = {json.dumps(value)}" for key, value in body.items() if value is not None
        ]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
