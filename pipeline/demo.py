"""`pipeline demo` and `pipeline sandbox`: the product end to end against the bundled simulators.

The demo builds its settings exactly as a user's pipeline.toml would be validated, pointing at
simulators on loopback, then shows the incremental story: a first full load, some changes at
the sources, and a second run that writes only those changes.
"""

from __future__ import annotations

import asyncio
import os
import random
from contextlib import AsyncExitStack
from typing import Any

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.config import settings_from_mapping
from pipeline.logs import secrets
from pipeline.report import exit_code, print_outcomes
from pipeline.runner import Runner, StreamOutcome, select_streams
from pipeline.sandbox import RunningSimulator, SohoSimulator, ValomniaSimulator, serve
from pipeline.sources import SOURCES


def sandbox_settings(soho: RunningSimulator, valomnia: RunningSimulator) -> dict[str, Any]:
    """The [sources] part of a pipeline.toml pointing at running simulators."""
    soho_sim = soho.sim
    valomnia_sim = valomnia.sim
    return {
        "sources": {
            "soho": {
                "base_url": f"{soho.url}/api/v1",
                "token": soho_sim.token,
                "max_concurrency": 4,
            },
            "valomnia": {
                "base_url": valomnia.url,
                "username": valomnia_sim.username,
                "password": valomnia_sim.password,
            },
        }
    }


def _toml_snippet(settings: dict[str, Any]) -> str:
    lines = []
    for name, body in settings["sources"].items():
        lines.append(f"[sources.{name}]")
        for key, value in body.items():
            lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


async def serve_sandbox(
    *,
    customers: int,
    authorities: int,
    host: str,
    soho_port: int,
    valomnia_port: int,
    console: Console,
) -> None:
    async with AsyncExitStack() as stack:
        soho = await stack.enter_async_context(
            serve(SohoSimulator(customers=customers), host=host, port=soho_port)
        )
        valomnia = await stack.enter_async_context(
            serve(ValomniaSimulator(authorities=authorities), host=host, port=valomnia_port)
        )
        settings = sandbox_settings(soho, valomnia)
        console.print(f"Enbro Soho simulator:  {soho.url}/api/v1   ({customers} customers)")
        console.print(
            f"Valomnia simulator:    {valomnia.url}/api/v2.1   ({authorities} authorities)"
        )
        console.print(
            "Control routes: <url>/_sandbox/records, /_sandbox/mutate, /_sandbox/faults ..."
        )
        console.print("\nA pipeline.toml for these simulators:\n")
        console.print(_toml_snippet(settings), markup=False, highlight=False)
        console.print("Serving until Ctrl-C.")
        await asyncio.Event().wait()


def _change_sources(soho: SohoSimulator, valomnia: ValomniaSimulator, rng: random.Random) -> str:
    """Edits, inserts and deletes such as a day of business would bring."""
    customer_ids = [c["id"] for c in soho.truth()]
    edited = rng.sample(customer_ids, 8)
    for cid in edited[:5]:
        soho.update_customer(cid, email=f"changed.{cid}@example.org")
    for cid in edited[5:]:
        soho.update_customer(cid, profile={"city": "Gent"})
    for _ in range(4):
        soho.insert_customer()
    for cid in rng.sample([c for c in customer_ids if c not in edited], 2):
        soho.delete_customer(cid)
    authority_ids = [a["id"] for a in valomnia.truth()]
    for aid in rng.sample(authority_ids, 10):
        valomnia.update(aid, name=f"Renamed role {aid}")
    for _ in range(3):
        valomnia.insert()
    return (
        "At the sources: 8 customers edited (5 emails, 3 profiles), 4 added, 2 deleted; "
        "10 authorities renamed, 3 added."
    )


DEMO_DATABASE = "pipeline_demo"


async def run_demo(
    engine: AsyncEngine,
    *,
    customers: int,
    authorities: int,
    console: Console,
    database_url: str,
) -> int:
    console.print(f"Demo database (recreated on each demo): {database_url}")
    console.print("Applying migrations...")
    await db.upgrade(engine)
    soho_sim = SohoSimulator(customers=customers)
    valomnia_sim = ValomniaSimulator(authorities=authorities)
    async with serve(soho_sim) as soho, serve(valomnia_sim) as valomnia:
        raw = sandbox_settings(soho, valomnia)
        settings = settings_from_mapping(raw, os.environ, SOURCES, label="(demo settings)")
        secrets.add(settings.secret_values())
        targets = select_streams(settings, [])
        console.print(
            f"Simulators: Enbro Soho at {soho.url} ({customers} customers), "
            f"Valomnia at {valomnia.url} ({authorities} authorities)\n"
        )
        first = await Runner(engine).run(targets)
        print_outcomes(first, console, title="1. first sync: everything is new")
        console.print()
        console.print(_change_sources(soho_sim, valomnia_sim, random.Random(7)))
        second = await Runner(engine).run(targets)
        print_outcomes(second, console, title="2. second sync: only what changed")
        third = await Runner(engine).run(targets)
        print_outcomes(third, console, title="3. third sync: nothing changed, nothing written")
    console.print(
        "\nTables: soho.customers, valomnia.authorities; history: pipeline.sync_runs.\n"
        f"Look at them: psql '{database_url}'   or   "
        f"DATABASE_URL='{database_url}' pipeline status",
        highlight=False,
    )
    outcomes: list[StreamOutcome] = [*first, *second, *third]
    return exit_code(outcomes)
