"""`backfill --slices N`: a window cut in N windows that run side by side, each with its own
checkpoint, together sharing the stream (and never beside another run of it)."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.run import Mode, Runner, sliced
from pipeline.sandbox import RunningSimulator, ValomniaSimulator, serve
from pipeline.targets import select_streams
from tests.helpers import execute, live_rows, make_settings, rows, scalar, sync, write_config
from tests.source_limits import expect_config

AUTHORITIES = "valomnia.authorities"


def _window(sim: Any) -> tuple[datetime, datetime, set[Any]]:
    stamps = sorted({datetime.fromisoformat(a["lastUpdated"]) for a in sim.truth()})
    since, until = stamps[len(stamps) // 5], stamps[4 * len(stamps) // 5]
    inside = {
        a["id"] for a in sim.truth() if since <= datetime.fromisoformat(a["lastUpdated"]) <= until
    }
    return since, until, inside


def test_slices_cover_the_window_edge_to_edge() -> None:
    since, until = (
        datetime.fromisoformat("2024-01-01T00:00:00+00:00"),
        datetime.fromisoformat("2024-01-04T00:00:00+00:00"),
    )
    slices = sliced(Mode("backfill", since=since, until=until), 3)
    assert [(m.since.day, m.until.day) for m in slices] == [(1, 2), (2, 3), (3, 4)]  # type: ignore[union-attr]
    assert all(m.sliced and m.kind == "backfill" for m in slices)


async def test_sliced_backfill_rewrites_the_window_in_parallel_slices(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    sim = ValomniaSimulator(authorities=500, seed=93, latency=0.03)
    async with serve(sim) as valomnia:
        settings = make_settings(valomnia=valomnia, streams={AUTHORITIES: {"page_size": 20}})
        await sync(engine, settings)
        watermark = await scalar(engine, "SELECT watermark FROM pipeline.stream_state")
        since, until, inside = _window(sim)
        # The warehouse's copies went bad: a backfill rewrites its window's rows.
        await execute(engine, """UPDATE valomnia.authorities SET data = data || '{"bad": 1}'""")
        sim.clear_requests()

        config = write_config(
            tmp_path / "pipeline.toml",
            {
                "sources.valomnia": {
                    "base_url": valomnia.url,
                    "username": sim.username,
                    "password": sim.password,
                },
                "sources.valomnia.streams.authorities": {"page_size": 20},
            },
        )
        env = {"DATABASE_URL": database_url}
        expect_config(config, env, valomnia)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "--config", str(config), "backfill", "authorities",
            "--since", since.isoformat(), "--until", until.isoformat(), "--slices", "4",
            env={**__import__("os").environ, **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()[-2000:]

    stored = await live_rows(engine, "valomnia.authorities")
    assert {i for i, data in stored.items() if "bad" not in data} == inside
    truth = {a["id"]: a for a in sim.truth()}
    assert all(stored[i] == truth[i] for i in inside)
    runs = await rows(
        engine,
        "SELECT status, started_at, finished_at, records_read FROM pipeline.sync_runs "
        "WHERE kind = 'backfill'",
    )
    assert [r.status for r in runs] == ["succeeded"] * 4
    # Cut at the stored rows' quantiles, not in equal spans of time: every slice has work.
    reads = sorted(r.records_read for r in runs)
    assert reads[0] > 0 and reads[-1] < 3 * reads[0], reads
    assert max(r.started_at for r in runs) < min(r.finished_at for r in runs)  # side by side
    ends = {r.query.get("lastUpdated_lte") for r in sim.requests if r.path.endswith("/authorities")}
    assert len(ends - {None}) >= 4  # each slice asked for its own window (or narrower)
    assert (
        await scalar(
            engine, "SELECT watermark FROM pipeline.stream_state WHERE stream = :s", s=AUTHORITIES
        )
        == watermark
    )
    assert await scalar(engine, "SELECT count(*) FROM pipeline.stream_state WHERE stream LIKE '%#backfill%'") == 0  # fmt: skip
    assert stdout.decode().count("succeeded") >= 4


async def test_slices_share_the_stream_and_keep_other_runs_out(
    engine: AsyncEngine, database_url: str, valomnia: RunningSimulator
) -> None:
    settings = make_settings(valomnia=valomnia)
    targets = select_streams(settings, [AUTHORITIES])
    since, until, _ = _window(valomnia.sim)
    [first, second] = sliced(Mode("backfill", since=since, until=until), 2)
    holder = await asyncpg.connect(db.plain_url(database_url))
    try:
        # A slice running elsewhere: the stream's lock shared, its window's held.
        await holder.execute(
            "SELECT pg_advisory_lock_shared(hashtextextended($1, 0)), "
            "pg_advisory_lock(hashtextextended($2, 0))",
            f"pipeline.stream:{AUTHORITIES}",
            f"pipeline.stream:{AUTHORITIES}#backfill@{first.window}",
        )
        [other_slice] = await Runner(engine, mode=second).run(targets)
        [same_slice] = await Runner(engine, mode=first).run(targets)
        [a_sync] = await Runner(engine, mode=Mode("sync")).run(targets)
    finally:
        await holder.close()
    assert other_slice.status == "succeeded", other_slice.error
    assert same_slice.status == "skipped"
    assert a_sync.status == "skipped"
