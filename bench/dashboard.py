"""How fast the dashboard answers with a 1,000,000-row stream table.

    .venv/bin/python bench/dashboard.py                # 1,000,000 customers, 5 requests a page
    .venv/bin/python bench/dashboard.py --rows 100000 --repeat 3   # a smoke run

Fills a database of its own (`pipeline_bench_dashboard`, recreated, dropped at the end) in
SQL: `soho.customers` with --rows rows (records of ~20 fields, 10 % carrying a field no column
reads, 1 % deleted, the newest 0.5 % written this week without a phone), 30 days of run history
(hourly runs) and 5,000 quarantined records. Then it serves the dashboard in-process on a
read-only engine, requests each page and its JSON twin --repeat times (after one warm-up) and
prints the median and the slowest, in milliseconds; JSON in bench/results/dashboard.json. It
exits 1 when a median reaches --budget-ms (default 1000). Postgres: DATABASE_URL (a server where
it may create a database), else the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine  # noqa: E402

from pipeline import db  # noqa: E402
from pipeline.config import settings_from_mapping  # noqa: E402
from pipeline.dashboard import build_app  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.sources import SOURCES  # noqa: E402

DATABASE = "pipeline_bench_dashboard"
KEY = "soho.customers"
PAGES = [
    "/",
    f"/streams/{KEY}",
    "/quarantine",
    f"/quarantine?stream={KEY}&reason=not%20an%20ISO-8601%20timestamp%3A%20%E2%80%A6",
    "/drift",
    "/jobs",
]

FILL = [
    # Customers as the Soho API sends them, typed columns filled as the loader would.
    """
    INSERT INTO soho.customers (_source, id, email, created_at, updated_at, profile_id,
        first_name, last_name, phone, city, language, profile_created_at, profile_updated_at,
        data, _hash, _cursor, _synced_at, _run_id, _deleted_at)
    SELECT 'soho', n, 'customer' || n || '@example.com', c, u, n + 5000000,
        'First' || (n % 997), 'Last' || (n % 1999), phone, 'City' || (n % 311), 'nl', c, u,
        jsonb_build_object(
            'id', n, 'email', 'customer' || n || '@example.com',
            'created_at', c, 'updated_at', u, 'status', 'active', 'newsletter', n % 2 = 0,
            'profile', jsonb_build_object('id', n + 5000000, 'first_name', 'First' || (n % 997),
                'last_name', 'Last' || (n % 1999), 'phone', phone, 'street', 'Main street',
                'building', (n % 200)::text, 'postal_code', lpad((n % 9999)::text, 4, '0'),
                'city', 'City' || (n % 311), 'language', 'nl', 'created_at', c, 'updated_at', u),
            'notes', repeat('x', 120)
        ) || CASE WHEN n % 10 = 0 THEN '{"loyalty_tier": "gold"}'::jsonb ELSE '{}' END,
        decode(md5(n::text), 'hex'), u, synced, gen_random_uuid(),
        CASE WHEN n % 100 = 0 THEN synced END
    FROM (
        SELECT n, now() - (n % 700) * interval '1 day' AS c,
            now() - (n % 300) * interval '1 hour' AS u,
            CASE WHEN n > CAST(:rows AS bigint) * 0.995 THEN now() - interval '1 day'
                 ELSE now() - interval '40 days' END AS synced,
            CASE WHEN n > CAST(:rows AS bigint) * 0.995 THEN NULL ELSE '+31 6 ' || n END AS phone
        FROM generate_series(1, CAST(:rows AS bigint)) AS n
    ) g
    """,
    # Hourly runs for 30 days.
    """
    INSERT INTO pipeline.sync_runs (run_id, stream, kind, status, started_at, finished_at,
        pages, records_read, inserted, updated, unchanged, quarantined, deleted)
    SELECT gen_random_uuid(), :key, 'sync', CASE WHEN h % 97 = 0 THEN 'failed' ELSE 'succeeded' END,
        now() - h * interval '1 hour', now() - h * interval '1 hour' + interval '95 seconds',
        40000, CAST(:rows AS bigint), h % 7, 500 + h % 300, CAST(:rows AS bigint) - 800, h % 3, h % 5
    FROM generate_series(1, 720) AS h
    """,
    """
    INSERT INTO pipeline.quarantine (run_id, stream, record_key, reason, raw, received_at)
    SELECT gen_random_uuid(), :key, n::text,
        CASE WHEN n % 3 = 0 THEN 'not an ISO-8601 timestamp: ''soon ' || n || ''''
             ELSE 'field ''created_at'': timestamp without a time zone: ''2024-01-01T10:' || n || '''' END,
        jsonb_build_object('id', n, 'updated_at', 'soon')::text, now() - n * interval '1 minute'
    FROM generate_series(1, 5000) AS n
    """,
    "INSERT INTO pipeline.stream_state (stream, watermark) VALUES (:key, now())",
]


async def fill(engine: AsyncEngine, rows: int) -> float:
    started = time.perf_counter()
    async with engine.begin() as conn:
        for statement in FILL:
            await conn.execute(sa.text(statement), {"rows": rows, "key": KEY})
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(sa.text("VACUUM ANALYZE soho.customers"))
        await conn.execute(sa.text("VACUUM ANALYZE pipeline.sync_runs"))
        await conn.execute(sa.text("VACUUM ANALYZE pipeline.quarantine"))
    return time.perf_counter() - started


async def measure(client: TestClient[Any, Any], path: str, repeat: int) -> dict[str, float]:
    times = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        response = await client.get(path)
        await response.read()
        assert response.status == 200, f"{path}: {response.status}"
        if attempt:  # the first one warms the pool and the caches
            times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "max_ms": max(times)}


async def main(rows: int, repeat: int, budget_ms: float) -> int:
    server = os.environ.get("DATABASE_URL") or await asyncio.to_thread(
        db.start_embedded, ROOT / ".pipeline" / "pgdata"
    )
    url = await db.recreate_database(server, DATABASE)
    owner = db.create_engine(url, pool_size=2)
    reader = db.create_engine(url, pool_size=5, read_only=True)
    results: dict[str, Any] = {"rows": rows, "repeat": repeat, "pages": {}}
    try:
        await db.upgrade(owner)
        results["fill_seconds"] = round(await fill(owner, rows), 1)
        print(f"filled {KEY} with {rows:,} rows in {results['fill_seconds']} s")
        raw = {"sources": {"soho": {"base_url": "http://127.0.0.1:9/api/v1", "token": "bench"}}}
        settings = settings_from_mapping(raw, {}, SOURCES, label="(bench)")
        async with TestClient(TestServer(build_app(reader, settings))) as client:
            print(f"{'page':<72} {'median ms':>10} {'max ms':>8}")
            for page in PAGES:
                api = "/api/overview" if page == "/" else f"/api{page}"
                for path in (page, api):
                    found = await measure(client, path, repeat)
                    results["pages"][path] = found
                    print(f"{path:<72} {found['median_ms']:>10.0f} {found['max_ms']:>8.0f}")
    finally:
        await reader.dispose()
        await owner.dispose()
        await db.drop_database(server, DATABASE)
    out = ROOT / "bench" / "results" / "dashboard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    slow = [p for p, r in results["pages"].items() if r["median_ms"] >= budget_ms]
    if slow:
        print(f"over {budget_ms:.0f} ms: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget-ms", type=float, default=1000.0)
    args = parser.parse_args()
    configure_logging("console", "warning")
    sys.exit(asyncio.run(main(args.rows, args.repeat, args.budget_ms)))
