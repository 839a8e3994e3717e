"""`backfill --slices N`: a window cut in N windows that run side by side.

Equal spans of time make poor slices: a source's changes bunch up (a migration day, a busy
season), and one slice would do nearly all the work. A backfill mostly re-reads what the table
holds already, so the cuts fall at the quantiles of the stored change times (`_cursor`) inside
the window: each slice has about as many stored rows. With too few stored rows to tell, the
window is cut into equal spans. Boundaries are inclusive, so a record changed exactly at a cut
is read by the slices on both sides (and written the same by each); none falls between.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.run.stream_run import Mode


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


__all__ = ["sliced", "sliced_by_rows"]
