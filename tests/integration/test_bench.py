"""The benchmarks still run: bench/fleet.py on tiny numbers, every scenario and every check of
its results, so the script cannot rot between full runs (its figures are not judged here)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def test_the_fleet_benchmark_runs_every_scenario_and_checks_it(
    pg_server_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "fleet.json"
    accounts, customers, shipments = 2, 30, 300
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "fleet.py"),
        "--quick",
        "--accounts",
        str(accounts),
        "--customers",
        str(customers),
        "--shipments",
        str(shipments),
        "--workers",
        "1,2",
        "--database",
        f"pipeline_fleet_{os.getpid()}",  # beside other test runs on the same server
        "--out",
        str(out),
        env={**os.environ, "DATABASE_URL": pg_server_url},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, output.decode()[-4000:]

    result = json.loads(out.read_text(encoding="utf-8"))
    measures = result["measures"]
    assert set(measures) == {
        "fleet_local",
        "fleet_1",
        "fleet_2",
        "shipments_local",
        "shipments_queue",
    }
    for key in ("fleet_local", "fleet_1", "fleet_2"):
        assert (measures[key]["streams"], measures[key]["records"]) == (
            accounts,
            accounts * customers,
        )
    assert measures["fleet_2"]["jobs_per_worker"] in ([1, 1], [2])
    assert measures["shipments_queue"]["records"] == shipments
    checks = result["checks"]
    assert len(checks) == 2 * 3 + 3 * 4  # exit, runs, rows; and jobs where queued
    assert all(checks.values()), checks
    speedup = result["ratios"]["fleet: 1 worker / 2 workers time"]
    assert len(speedup["rounds"]) == 1 and speedup["value"] > 0
