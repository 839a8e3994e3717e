"""`GET /metrics` in Prometheus' text format (or OpenMetrics, when the scraper asks for it),
served from the process's event loop.

Two ways to serve it: `add_metrics_route(app)` mounts it on an aiohttp application that
exists already (the dashboard's); `serving_metrics(host, port)` runs a small server of its
own for the long-running commands (`pipeline schedule|worker --metrics-port N`). Both serve
`pipeline.metrics.current()`, and may run a `refresh` (e.g. `Freshness.refresh`) before
each scrape. Not prometheus_client's thread server: one event loop, no lock with the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from pipeline import metrics
from pipeline.errors import ConfigError
from pipeline.logs import get_logger

log = get_logger(__name__)

Refresh = Callable[[], Awaitable[None]]
METRICS_PATH = "/metrics"
REFRESH: web.AppKey[Refresh] = web.AppKey("pipeline_metrics_refresh")


async def metrics_handler(request: web.Request) -> web.Response:
    """The process's metrics, in the format the scraper's Accept header asks for."""
    return await metrics_endpoint(request.app.get(REFRESH))(request)


def metrics_endpoint(
    refresh: Refresh | None = None,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A `/metrics` handler for another app (the dashboard's), `refresh` run before each
    scrape."""

    async def scrape(request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        encode, content_type = choose_encoder(",".join(request.headers.getall("Accept", [])))
        return web.Response(
            body=encode(metrics.current().registry), headers={"Content-Type": content_type}
        )

    return scrape


def add_metrics_route(
    app: web.Application, *, refresh: Refresh | None = None, path: str = METRICS_PATH
) -> None:
    """Mount `GET path` (and HEAD) on `app`; `refresh` runs before each scrape."""
    if refresh is not None:
        app[REFRESH] = refresh
    app.router.add_get(path, metrics_handler)


@contextlib.asynccontextmanager
async def serving_metrics(
    host: str, port: int, *, refresh: Refresh | None = None
) -> AsyncIterator[int]:
    """Serve `/metrics` on host:port while the block runs; yields the port listened on (the
    one the system chose, for port 0). A port taken is a ConfigError naming the option."""
    app = web.Application()
    add_metrics_route(app, refresh=refresh)
    # A scrape in flight at the stop gets a few seconds, not the minute aiohttp would give.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {port}: cannot serve /metrics on {host}:{port} "
                f"({exc.strerror or exc}); choose a free port, or leave --metrics-port out"
            ) from None
        bound = _bound_port(runner, port)
        log.info("metrics_serving", url=f"http://{host}:{bound}{METRICS_PATH}", port=bound)
        yield bound
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


__all__ = ["METRICS_PATH", "Refresh", "add_metrics_route", "metrics_handler", "serving_metrics"]
