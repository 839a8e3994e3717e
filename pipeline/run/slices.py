"""`backfill --slices N`: a window cut in N windows that run side by side.

Equal spans of time make poor slices: a source's changes bunch up (a migration day, a busy
season), and one slice would do nearly all the work. A backfill mostly re-reads what the table
holds already, so the cuts fall at the quantiles of the stored change times (`_cursor`) inside
the window: each slice has about as many stored rows. With too few stored rows to tell, the
window is cut into equal spans. Boundaries are inclusive, so a record changed exactly at a cut
is read by the slices on both sides (and written the same by each); none falls between.

A sliced backfill is bounded: at most `MAX_SLICES`, and never more than the window has seconds
(the finest filter a source offers is the second). The windows it cut are kept in the first
stream's state (`#backfill-plan`) until every slice has succeeded, so running the same command
again after a crash or a stop resumes the same slices from their checkpoints, even without
`--until` (whose "now" has moved on) and though the stored rows' quantiles have shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import statekeys
from pipeline.run.stream_run import Mode, StreamOutcome

MAX_SLICES = 64
MIN_SLICE_SECONDS = 1


def refusal(slices: int, since: datetime, until: datetime | None) -> str | None:
    """Why `--slices` cannot cut this window, or None."""
    if slices < 1:
        return f"--slices {slices}: give 1 or more"
    if slices > MAX_SLICES:
        return (
            f"--slices {slices}: at most {MAX_SLICES} slices run side by side; give "
            f"{MAX_SLICES} or fewer (more slices than streams the process runs at once only wait)"
        )
    span = ((until or datetime.now(UTC)) - since).total_seconds()
    if slices > 1 and span / slices < MIN_SLICE_SECONDS:
        most = max(1, int(span // MIN_SLICE_SECONDS))
        return (
            f"--slices {slices}: the window holds {span:g} seconds, and a slice needs at least "
            f"{MIN_SLICE_SECONDS} s; give at most {most}"
        )
    return None


def sliced(mode: Mode, slices: int, cuts: list[datetime] | None = None) -> list[Mode]:
    """The window's slices: at `cuts` (ascending, inside the window) or in equal spans."""
    assert mode.since is not None
    until = mode.until or datetime.now(UTC)
    if cuts is None:
        step = (until - mode.since) / slices
        cuts = [mode.since + step * i for i in range(1, slices)]
    edges = [mode.since, *cuts, until]
    return [replace(mode, since=start, until=end, sliced=True) for start, end in pairwise(edges)]


async def sliced_by_rows(
    engine: AsyncEngine, targets: list[Any], mode: Mode, slices: int
) -> list[Mode]:
    """Slices holding about equal numbers of the targets' stored rows (see the module)."""
    assert mode.since is not None
    until = mode.until or datetime.now(UTC)
    [table] = {(t.source.schema, t.stream.name) for t in targets}  # one stream, any instances
    fractions = [i / slices for i in range(1, slices)]
    query = sa.text(
        f"SELECT percentile_disc(CAST(:fractions AS float8[])) WITHIN GROUP (ORDER BY _cursor), count(*) "
        f'FROM "{table[0]}"."{table[1]}" '
        "WHERE _source = ANY(:sources) AND _cursor BETWEEN :since AND :until"
    )
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                query,
                {
                    "fractions": fractions,
                    "sources": [t.instance for t in targets],
                    "since": mode.since,
                    "until": until,
                },
            )
        ).one()
    quantiles, stored = found
    if stored < slices * 10 or not quantiles:
        return sliced(mode, slices)
    cuts = sorted({q for q in quantiles if mode.since < q < until})
    return sliced(mode, slices, cuts)


_PLAN_READ = sa.text("SELECT checkpoint FROM pipeline.stream_state WHERE stream = :key")
_PLAN_WRITE = sa.text(
    "INSERT INTO pipeline.stream_state (stream, checkpoint, updated_at) "
    "VALUES (:key, CAST(:plan AS jsonb), now()) "
    "ON CONFLICT (stream) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, updated_at = now()"
)
_PLAN_FORGET = sa.text("DELETE FROM pipeline.stream_state WHERE stream = :key")


def _plan_key(targets: Sequence[Any]) -> str:
    return str(statekeys.backfill_plan(min(t.key for t in targets)))


def _asked(targets: Sequence[Any], mode: Mode, slices: int) -> dict[str, Any]:
    """What the command asked for: a plan is reused only for the very same request."""
    return {
        "targets": sorted(t.key for t in targets),
        "since": mode.since.isoformat() if mode.since else None,
        "until": mode.until.isoformat() if mode.until else None,
        "slices": slices,
    }


async def planned_slices(
    engine: AsyncEngine, targets: Sequence[Any], mode: Mode, slices: int
) -> list[Mode]:
    """The slices of this request: those it cut before, if it did and did not finish, else new
    ones (`sliced_by_rows`), kept until `finished` (see the module)."""
    asked = _asked(targets, mode, slices)
    key = _plan_key(targets)
    async with engine.connect() as conn:
        stored = (await conn.execute(_PLAN_READ, {"key": key})).scalar()
    if isinstance(stored, str):
        stored = orjson.loads(stored)
    if isinstance(stored, dict) and stored.get("asked") == asked:
        return [
            replace(
                mode, since=datetime.fromisoformat(a), until=datetime.fromisoformat(b), sliced=True
            )
            for a, b in stored["windows"]
        ]
    modes = await sliced_by_rows(engine, list(targets), mode, slices)
    windows = [[m.since.isoformat(), m.until.isoformat()] for m in modes if m.since and m.until]
    plan = orjson.dumps({"asked": asked, "windows": windows}).decode()
    async with engine.begin() as conn:
        await conn.execute(_PLAN_WRITE, {"key": key, "plan": plan})
    return modes


async def finished(
    engine: AsyncEngine, targets: Sequence[Any], outcomes: Sequence[StreamOutcome]
) -> None:
    """Forget the plan once every slice succeeded; a failed or stopped one resumes with it."""
    if outcomes and all(o.status == "succeeded" for o in outcomes):
        async with engine.begin() as conn:
            await conn.execute(_PLAN_FORGET, {"key": _plan_key(targets)})


__all__ = [
    "MAX_SLICES",
    "MIN_SLICE_SECONDS",
    "finished",
    "planned_slices",
    "refusal",
    "sliced",
    "sliced_by_rows",
]
