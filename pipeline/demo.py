"""`pipeline demo` and `pipeline sandbox`: the product end to end against the bundled simulators.

The demo builds its settings exactly as a user's pipeline.toml would be validated, pointing at
simulators on loopback, then shows the incremental story: a first full load, some changes at
the sources, a second run that writes only those changes, and a quiet third run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.config import settings_from_mapping
from pipeline.exits import for_outcomes
from pipeline.logs import secrets
from pipeline.report import print_outcomes
from pipeline.run import Runner, StreamOutcome
from pipeline.sandbox import SANDBOXES, RunningSimulator, Simulator, serve, serve_accounts
from pipeline.sources import SOURCES
from pipeline.targets import select_streams

DEMO_DATABASE = "pipeline_demo"
DEMO_SEED = 1  # every simulator's default seed: the demo holds the data a bare simulator does


def default_sizes() -> dict[str, int]:
    """Every source's sizes (`SandboxSource.sizes`) at their defaults, by size name."""
    return {size.name: size.default for sandbox in SANDBOXES.values() for size in sandbox.sizes}


def build_simulators(sizes: Mapping[str, int]) -> dict[str, Simulator]:
    """One simulator per source, keyed by the source name used in pipeline.toml."""
    return {name: sandbox.build(DEMO_SEED, sizes) for name, sandbox in SANDBOXES.items()}


def source_settings(name: str, running: RunningSimulator) -> dict[str, Any]:
    """The [sources.<name>] table of a pipeline.toml pointing at a running simulator."""
    return SANDBOXES[name].settings(running)


def toml_tables(sources: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for name, body in sources.items():
        lines.append(f"[sources.{name}]")
        for key, value in body.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


async def _serve_all(
    stack: AsyncExitStack,
    sims: Mapping[str, Simulator],
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
) -> dict[str, RunningSimulator]:
    return {
        name: await stack.enter_async_context(
            serve(sim, host=host, port=(ports or {}).get(name, 0))
        )
        for name, sim in sims.items()
    }


async def serve_sandbox(
    *,
    sizes: Mapping[str, int],
    host: str,
    ports: Mapping[str, int],
    console: Console,
    accounts: int = 1,
) -> None:
    """Serve every simulator until cancelled, printing a pipeline.toml for them. With several
    `accounts`, each source's server plays that many accounts of its API (`<source>_a`, ...,
    each with its own seed and credentials), one [sources.<instance>] table each."""
    async with AsyncExitStack() as stack:
        if accounts == 1:
            running = await _serve_all(stack, build_simulators(sizes), host, ports)
            sources = {name: source_settings(name, r) for name, r in running.items()}
            urls = {name: sources[name]["base_url"] for name in running}
            control = "<url>/_sandbox/records, /_sandbox/mutate, /_sandbox/faults ..."
        else:
            sources, urls = await _serve_accounts(stack, sizes, host, ports, accounts)
            control = "<url>/_sandbox/accounts/<instance>/records, .../mutate, .../faults ..."
        for name, url in urls.items():
            console.print(f"{SOURCES[name].title} simulator: {url}")
        console.print(f"Control routes: {control}")
        console.print("\nA pipeline.toml for these simulators:\n")
        console.print(toml_tables(sources), markup=False, highlight=False, soft_wrap=True)
        console.print("Serving until Ctrl-C.")
        await asyncio.Event().wait()


async def _serve_accounts(
    stack: AsyncExitStack,
    sizes: Mapping[str, int],
    host: str,
    ports: Mapping[str, int],
    count: int,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One server of `count` accounts per source: the tables of its instances, and its URL
    (with the accounts it plays)."""
    sources: dict[str, dict[str, Any]] = {}
    urls = {}
    for name, sandbox in SANDBOXES.items():
        names = sandbox.account_names(count)
        seeds = {instance: DEMO_SEED + i for i, instance in enumerate(names)}
        server = await stack.enter_async_context(
            serve_accounts(sandbox.build_accounts(seeds, sizes), host, ports.get(name, 0))
        )
        for instance, account in server.each().items():
            sources[instance] = {"type": name, **sandbox.settings(account)}
        urls[name] = f"{server.url}{sandbox.api_path} ({count} accounts: {', '.join(names)})"
    return sources, urls


def _change_sources(sims: Mapping[str, Simulator], rng: random.Random) -> str:
    """Edits, inserts and deletes such as a day of business would bring."""
    done = [SANDBOXES[name].change_for_demo(sim, rng) for name, sim in sims.items()]
    return "At the sources: " + "; ".join(done) + "."


def _listed(words: list[str]) -> str:
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


async def run_demo(
    engine: AsyncEngine, *, sizes: Mapping[str, int], console: Console, database_url: str
) -> int:
    console.print(f"Demo database (recreated on each demo): {database_url}")
    console.print("Applying migrations...")
    await db.upgrade(engine)
    sims = build_simulators(sizes)
    async with AsyncExitStack() as stack:
        running = await _serve_all(stack, sims)
        raw = {"sources": {name: source_settings(name, r) for name, r in running.items()}}
        settings = settings_from_mapping(raw, os.environ, SOURCES, label="(demo settings)")
        secrets.add(settings.secret_values())
        targets = select_streams(settings, [])
        console.print(
            "Simulators: "
            + ", ".join(f"{SOURCES[n].title} at {r.url}" for n, r in running.items())
            + "\n"
        )
        first = await Runner(engine).run(targets)
        print_outcomes(first, console, title="1. first sync: everything is new")
        console.print()
        console.print(_change_sources(sims, random.Random(7)))
        second = await Runner(engine).run(targets)
        print_outcomes(second, console, title="2. second sync: only what changed")
        third = await Runner(engine).run(targets)
        print_outcomes(third, console, title="3. third sync: nothing changed, nothing written")
    schemas = _listed([SOURCES[name].schema for name in sims])
    console.print(
        f"\nTables: schemas {schemas}; history: pipeline.sync_runs.\n"
        f"Look at them: psql '{database_url}'   or   "
        f"DATABASE_URL='{database_url}' pipeline status",
        highlight=False,
    )
    outcomes: list[StreamOutcome] = [*first, *second, *third]
    return for_outcomes(outcomes)
