"""Schema drift: what the stored records say that the declarations do not.

Per stream table, from its live rows' `data`:
- top-level fields no declaration reads (no column, child table or cursor names them), with
  how many rows carry each and the oldest `_synced_at` among them (when the stored rows first
  show it: a row rewritten since reads as its rewrite);
- typed columns null in every row written in the last RECENT days, with how many older rows
  had a value: filled before and null lately is a field the API stopped sending (or renamed).

A table larger than SAMPLE_ROWS is read through `TABLESAMPLE SYSTEM` (whole pages at random,
the same pages for both questions), sized from the table's current page count, so the page
answers in well under a second at millions of rows; counts are then estimates, and the page
says so. Tables are read side by side, each on its own connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.sources import SOURCES
from pipeline.streams import Stream
from pipeline.tables import streams_with_tables

SAMPLE_ROWS = 20_000
RECENT = timedelta(days=7)
# Rows per page assumed for a table never analysed (reltuples unknown): guessing dense keeps
# the sample small, so the page stays fast at the cost of a less precise estimate.
ROWS_PER_PAGE_GUESS = 20


@dataclass(frozen=True)
class ExtraField:
    name: str
    rows: int  # in the rows read
    share: float  # of the rows read
    estimated_rows: int  # in the whole table (equal to rows when not sampled)
    first_seen: datetime


@dataclass(frozen=True)
class NullColumn:
    name: str
    recent_rows: int  # written in the last RECENT days, all with it null
    filled_before: int  # older rows that have a value


@dataclass(frozen=True)
class TableDrift:
    table: str
    streams: list[str]  # the configured stream keys that write it
    estimated_rows: int
    rows_read: int
    sampled: bool
    sample_percent: float
    fields: list[ExtraField]
    null_columns: list[NullColumn]
    seconds: float


@dataclass(frozen=True)
class DriftPage:
    tables: list[TableDrift]
    recent_days: int
    sample_rows: int
    seconds: float


def declared_fields(stream: Stream) -> set[str]:
    """The top-level fields of a record that the declaration reads."""
    names = {c.source_path[0] for c in stream.columns if c.derive is None}
    names |= {child.source_path[0] for child in stream.children}
    names |= {path.split(".")[0] for path in (stream.cursor.paths if stream.cursor else ())}
    return names


_SIZE = sa.text(
    "SELECT c.reltuples, c.relpages, "
    "pg_relation_size(c.oid) / current_setting('block_size')::int AS pages "
    "FROM pg_class c WHERE c.oid = CAST(:table AS regclass)"
)


def _estimate(reltuples: float, relpages: int, pages: int) -> int:
    density = reltuples / relpages if reltuples > 0 and relpages > 0 else ROWS_PER_PAGE_GUESS
    return int(density * pages)


async def table_drift(
    engine: AsyncEngine, schema: str, stream: Stream, keys: list[str], now: datetime
) -> TableDrift:
    started = time.perf_counter()
    table = f'"{schema}"."{stream.name}"'
    columns = [c.name for c in stream.columns if not c.primary_key]
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET LOCAL statement_timeout = '10s'"))
        size = (await conn.execute(_SIZE, {"table": table})).one()
        estimated = _estimate(size.reltuples, size.relpages, size.pages)
        sampled = estimated > SAMPLE_ROWS
        percent = min(100.0, 100.0 * SAMPLE_ROWS / estimated) if sampled else 100.0
        sample = f"TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE (1)" if sampled else ""
        fields = await conn.execute(
            sa.text(
                f"SELECT k AS name, count(*) AS n, min(t._synced_at) AS first_seen "
                f"FROM {table} t {sample}, jsonb_object_keys(t.data) AS k "
                "WHERE t._deleted_at IS NULL AND jsonb_typeof(t.data) = 'object' "
                "AND NOT (k = ANY(CAST(:declared AS text[]))) "
                "GROUP BY k ORDER BY count(*) DESC, k"
            ),
            {"declared": sorted(declared_fields(stream))},
        )
        found = list(fields)
        live, recent = "t._deleted_at IS NULL", "t._deleted_at IS NULL AND t._synced_at >= :recent"
        counts = ", ".join(
            f'count("{c}") FILTER (WHERE {recent}) AS "r_{c}", '
            f'count("{c}") FILTER (WHERE {live} AND NOT t._synced_at >= :recent) AS "o_{c}"'
            for c in columns
        )
        totals = (
            (
                await conn.execute(
                    sa.text(
                        f"SELECT count(*) AS rows, count(*) FILTER (WHERE {live}) AS live, "
                        f"count(*) FILTER (WHERE {recent}) AS recent"
                        f"{', ' + counts if counts else ''} FROM {table} t {sample}"
                    ),
                    {"recent": now - RECENT},
                )
            )
            .one()
            ._mapping
        )
    read = totals["live"]
    # Sampled: the table's size from its statistics, the live share and each field's share
    # from the sample (ratios vary far less than a sample's row count does).
    live_rows = round(estimated * read / totals["rows"]) if sampled and totals["rows"] else read
    return TableDrift(
        table=f"{schema}.{stream.name}",
        streams=keys,
        estimated_rows=live_rows,
        rows_read=read,
        sampled=sampled,
        sample_percent=percent,
        fields=[
            ExtraField(
                name=f.name,
                rows=f.n,
                share=f.n / read if read else 0.0,
                estimated_rows=round(live_rows * f.n / read) if read else 0,
                first_seen=f.first_seen,
            )
            for f in found
        ],
        null_columns=sorted(
            (
                NullColumn(c, totals["recent"], totals[f"o_{c}"])
                for c in columns
                if totals["recent"] and totals[f"r_{c}"] == 0
            ),
            key=lambda n: (-n.filled_before, n.name),
        ),
        seconds=time.perf_counter() - started,
    )


async def drift_page(engine: AsyncEngine, settings: Settings, now: datetime) -> DriftPage:
    started = time.perf_counter()
    jobs = []
    for spec in SOURCES.values():
        for stream in streams_with_tables(spec):
            keys = [
                f"{config.name}.{stream.name}"
                for config in settings.sources.values()
                if config.type == spec.name
            ]
            jobs.append(table_drift(engine, spec.schema, stream, keys, now))
    tables = await asyncio.gather(*jobs)
    return DriftPage(
        tables=list(tables),
        recent_days=RECENT.days,
        sample_rows=SAMPLE_ROWS,
        seconds=time.perf_counter() - started,
    )
