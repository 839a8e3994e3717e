"""The README's screenshot of the dashboard's overview, taken by headless Chromium.

    .venv/bin/python bench/dashboard_screenshot.py [--out docs/dashboard-overview.png]

Fills a database of its own (`pipeline_dashboard_screenshot`, recreated) the way the dashboard
tests do (tests/dashboard_state.py: every simulator at the demo's sizes, one stream failed,
one late, records quarantined), serves the dashboard on loopback and saves the overview as
Chromium renders it, failing on any console error or failed request. Postgres: DATABASE_URL
(a server where it may create a database), else the embedded one. Needs `chromium`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from pipeline import db  # noqa: E402
from pipeline.dashboard import build_app  # noqa: E402
from pipeline.demo import DEMO_SEED, default_sizes  # noqa: E402
from pipeline.logs import configure_logging  # noqa: E402
from pipeline.sandbox import SANDBOXES, serve  # noqa: E402
from tests.browser import Browser, save  # noqa: E402
from tests.dashboard_state import build_state  # noqa: E402

DATABASE = "pipeline_dashboard_screenshot"


async def main(out: Path, width: int) -> int:
    server = os.environ.get("DATABASE_URL") or await asyncio.to_thread(
        db.start_embedded, ROOT / ".pipeline" / "pgdata"
    )
    url = await db.recreate_database(server, DATABASE)
    owner = db.create_engine(url, pool_size=4)
    reader = db.create_engine(url, pool_size=4, read_only=True)
    try:
        await db.upgrade(owner)
        async with AsyncExitStack() as stack:
            sims = {
                name: await stack.enter_async_context(
                    serve(sandbox.build(DEMO_SEED, default_sizes()))
                )
                for name, sandbox in SANDBOXES.items()
            }
            state = await build_state(owner, sims)
        runner = web.AppRunner(build_app(reader, state.settings))
        await runner.setup()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with Browser() as browser:
                load = await browser.load(f"http://127.0.0.1:{port}/", width=width, height=700)
        finally:
            await runner.cleanup()
    finally:
        await reader.dispose()
        await owner.dispose()
        await db.drop_database(server, DATABASE)
    if load.problems or load.status != 200:
        print(f"the overview did not load cleanly ({load.status}): {load.problems}")
        return 1
    print(f"saved {save(load, out)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard-overview.png")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    configure_logging("console", "warning")
    sys.exit(asyncio.run(main(args.out, args.width)))
