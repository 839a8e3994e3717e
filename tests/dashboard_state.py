"""A database as the dashboard shows it after a few days of the demo's kind of syncs: the real
runner against the simulators, with one stream failed, one late, records quarantined (one of
them quoting a secret, one carrying markup), a field no column reads and a column the source
stopped filling. The dashboard tests and the README's screenshot (bench/dashboard_screenshot.py)
both build it here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.sandbox import SANDBOXES, HttpError, RunningSimulator
from pipeline.sources import SOURCES
from tests.helpers import execute, make_settings, sync

FAILED = "digilocker.statistics"
LATE = "valomnia.authorities"
QUARANTINED = "soho.customers"
NEW_FIELD = "loyalty_tier"  # sent by 30 customers, read by no column
STOPPED_COLUMN = "phone"  # no longer sent for the customers changed lately
MARKUP = "<script>alert('quarantined')</script>"


@dataclass(frozen=True)
class DashboardState:
    settings: Settings
    sources: dict[str, dict[str, Any]]  # the [sources.<name>] tables of a pipeline.toml
    secret: str  # a source's token that a quarantined record quoted


async def build_state(engine: AsyncEngine, sims: dict[str, RunningSimulator]) -> DashboardState:
    """`sims`: running simulators by source; soho, valomnia and digilocker play the roles above,
    any other is synced and left fresh."""
    soho, digilocker = sims["soho"], sims["digilocker"]
    assert "valomnia" in sims, "valomnia plays the late stream"
    sim: Any = soho.sim
    store, ids = sim._customers, sim.ids
    store[ids[5]]["updated_at"] = "yesterday afternoon"
    store[ids[6]]["created_at"] = "2024-01-01T10:00:00"  # no time zone
    store[ids[6]]["note"] = f"call back; API token {sim.token}"
    store[ids[7]]["updated_at"] = "soon"
    store[ids[7]]["note"] = MARKUP
    for i in range(10, 40):
        store[ids[i]][NEW_FIELD] = "gold" if i % 3 else "silver"

    settings = make_settings(*sims.values())
    await sync(engine, settings)
    # The first sync was some days ago: its runs and the rows it wrote are older.
    await execute(
        engine,
        "UPDATE pipeline.sync_runs SET started_at = started_at - interval '6 days', "
        "finished_at = finished_at - interval '6 days'",
    )
    await execute(engine, "UPDATE soho.customers SET _synced_at = _synced_at - interval '20 days'")

    for i in range(50, 58):
        del store[ids[i]]["profile"][STOPPED_COLUMN]
    others = [n for n in sims if n not in ("soho", "valomnia", "digilocker")]
    fresh = [QUARANTINED, *(f"{n}.{s.name}" for n in others for s in SOURCES[n].streams)]
    await sync(engine, settings, *fresh)
    digilocker.sim.faults.add(HttpError(503), times=None, path_prefix="/public/statistics")
    failing = make_settings(digilocker=digilocker, digilocker_extra={"max_retries": 0})
    await sync(engine, failing)
    digilocker.sim.faults.clear()
    # Valomnia's last success three days ago, for a daily schedule: late.
    await execute(
        engine,
        "UPDATE pipeline.sync_runs SET started_at = started_at - interval '3 days', "
        "finished_at = finished_at - interval '3 days' WHERE stream = :late",
        late=LATE,
    )
    sources = {name: SANDBOXES[name].settings(running) for name, running in sims.items()}
    return DashboardState(settings=settings, sources=sources, secret=sim.token)
