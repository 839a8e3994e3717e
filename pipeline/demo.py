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
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.config import settings_from_mapping
from pipeline.logs import secrets
from pipeline.report import exit_code, print_outcomes
from pipeline.run import Runner, StreamOutcome
from pipeline.sandbox import (
    AfostoSimulator,
    DigiLockerSimulator,
    RunningSimulator,
    Simulator,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
)
from pipeline.sources import SOURCES
from pipeline.targets import select_streams

DEMO_DATABASE = "pipeline_demo"


@dataclass(frozen=True)
class DemoSizes:
    customers: int = 500
    authorities: int = 1200
    shipments: int = 800
    contacts: int = 300
    credentials: int = 400


def build_simulators(sizes: DemoSizes) -> dict[str, Simulator]:
    """One simulator per source, keyed by the source name used in pipeline.toml."""
    return {
        "soho": SohoSimulator(customers=sizes.customers),
        "valomnia": ValomniaSimulator(authorities=sizes.authorities),
        "afosto": AfostoSimulator(
            contacts=sizes.contacts, shipments=sizes.shipments, groups=5, prices_per_group=60
        ),
        "sparkfly": SparkflySimulator(credentials=sizes.credentials),
        "digilocker": DigiLockerSimulator(issuers=20),
    }


def source_settings(name: str, running: RunningSimulator) -> dict[str, Any]:
    """The [sources.<name>] table of a pipeline.toml pointing at a running simulator."""
    sim: Any = running.sim
    if name == "soho":
        return {"base_url": f"{running.url}/api/v1", "token": sim.token, "max_concurrency": 4}
    if name == "valomnia":
        return {"base_url": running.url, "username": sim.username, "password": sim.password}
    if name == "afosto":
        return {"base_url": running.url, "token": sim.token, "max_concurrency": 4}
    if name == "sparkfly":
        return {"base_url": running.url, "token": sim.token}
    if name == "digilocker":
        return {
            "base_url": f"{running.url}/public",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
        }
    raise KeyError(name)


def _toml_snippet(sources: Mapping[str, Mapping[str, Any]]) -> str:
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
    *, sizes: DemoSizes, host: str, ports: Mapping[str, int], console: Console
) -> None:
    async with AsyncExitStack() as stack:
        running = await _serve_all(stack, build_simulators(sizes), host, ports)
        sources = {name: source_settings(name, r) for name, r in running.items()}
        for name in running:
            console.print(f"{SOURCES[name].title} simulator: {sources[name]['base_url']}")
        console.print(
            "Control routes: <url>/_sandbox/records, /_sandbox/mutate, /_sandbox/faults ..."
        )
        console.print("\nA pipeline.toml for these simulators:\n")
        console.print(_toml_snippet(sources), markup=False, highlight=False, soft_wrap=True)
        console.print("Serving until Ctrl-C.")
        await asyncio.Event().wait()


def _change_sources(sims: Mapping[str, Any], rng: random.Random) -> str:
    """Edits, inserts and deletes such as a day of business would bring."""
    soho, valomnia, afosto = sims["soho"], sims["valomnia"], sims["afosto"]
    sparkfly, digilocker = sims["sparkfly"], sims["digilocker"]
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
    for aid in rng.sample([a["id"] for a in valomnia.truth()], 10):
        valomnia.update(aid, name=f"Renamed role {aid}")
    for _ in range(3):
        valomnia.insert()
    shipments = afosto.truth("shipments")
    for shipment in rng.sample(shipments, 6):
        afosto.update_shipment(shipment["id"], is_finished=True)
    afosto.delete_shipment(rng.choice(shipments)["id"])
    for _ in range(5):
        afosto.insert_shipment()
    price = rng.choice(afosto.truth("prices"))
    afosto.upsert_price(
        price["price_group_id"], price["sku"], price["amount"] + 250, active_at=price["active_at"]
    )
    redeemable = [c["id"] for c in sparkfly.truth() if c["status"] == "open" and c["offer_ids"]]
    for credential_id in rng.sample(redeemable, 3):
        sparkfly.redeem(credential_id)
    sparkfly.insert()
    digilocker.add_issuer()
    return (
        "At the sources: 8 customers edited, 4 added, 2 deleted; 10 authorities renamed, 3 added; "
        "6 shipments finished, 5 added, 1 deleted; 1 price changed in place; 3 credentials "
        "redeemed, 1 added; 1 new DigiLocker issuer."
    )


async def run_demo(
    engine: AsyncEngine, *, sizes: DemoSizes, console: Console, database_url: str
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
    console.print(
        "\nTables: schemas soho, valomnia, afosto, sparkfly and digilocker; history: "
        "pipeline.sync_runs.\n"
        f"Look at them: psql '{database_url}'   or   "
        f"DATABASE_URL='{database_url}' pipeline status",
        highlight=False,
    )
    outcomes: list[StreamOutcome] = [*first, *second, *third]
    return exit_code(outcomes)
