"""The dashboard's aiohttp application: one loader per page, rendered as HTML (Jinja2 templates)
or, under `/api`, as the same data in JSON.

`build_app(..., metrics=handler)` mounts a `/metrics` handler beside the pages (behind the same
token check); the Prometheus exposition itself lives with the metrics, not here.

In front of every route, outermost first: the security headers (on every answer, refusals and
errors included), the Host check (`hosts`), the token (`auth`), well-formed URLs (`params`).
A database error becomes the dashboard's own 503 page (HTML, or JSON under `/api`): a missing
privilege names the grant, anything else says the database could not be read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from aiohttp import web
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import dberrors
from pipeline.config import Settings
from pipeline.dashboard import params, quarantine, queries
from pipeline.dashboard.auth import Handler, token_middleware
from pipeline.dashboard.charts import Series, time_chart
from pipeline.dashboard.drift import drift_page
from pipeline.dashboard.hosts import LOOPBACK_NAMES, host_check
from pipeline.logs import get_logger, secrets

log = get_logger(__name__)

HERE = Path(__file__).resolve().parent
ENGINE = web.AppKey("engine", AsyncEngine)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Callable[[], datetime])
TEMPLATES = web.AppKey("templates", jinja2.Environment)
# aiohttp's parser answers a longer request line itself, with a bare 400 that quotes it; up to
# this much reaches the dashboard, whose refusal names the parameter and carries the headers.
MAX_REQUEST_LINE = 128 * 1024

# Pages load nothing but their own stylesheet: no script, no remote font, no CDN.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",  # frame-ancestors' twin for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Page:
    name: str
    path: str
    api_path: str
    template: str
    load: Callable[[web.Request], Awaitable[Any]]


# ---- loaders ---------------------------------------------------------------------------------


def _now(request: web.Request) -> datetime:
    return request.app[CLOCK]()


async def _overview(request: web.Request) -> queries.Overview:
    return await queries.overview(request.app[ENGINE], request.app[SETTINGS], _now(request))


async def _stream(request: web.Request) -> queries.StreamPage:
    key = params.path_text(request, "key")
    page = await queries.stream_page(request.app[ENGINE], request.app[SETTINGS], key, _now(request))
    if page is None:
        raise web.HTTPNotFound(
            text=f"no stream {key!r}: it is not configured and has no run history or state\n"
        )
    return page


async def _quarantine(request: web.Request) -> quarantine.QuarantinePage:
    return await quarantine.quarantine_page(
        request.app[ENGINE],
        stream=params.query_text(request, "stream"),
        reason=params.query_text(request, "reason"),
        before=params.record_id(request, "before"),
    )


async def _drift(request: web.Request) -> Any:
    return await drift_page(request.app[ENGINE], request.app[SETTINGS], _now(request))


async def _jobs(request: web.Request) -> queries.JobsPage:
    return await queries.jobs_page(request.app[ENGINE], request.app[SETTINGS])


PAGES = [
    Page("overview", "/", "/api/overview", "overview.html", _overview),
    Page("stream", "/streams/{key}", "/api/streams/{key}", "stream.html", _stream),
    Page("quarantine", "/quarantine", "/api/quarantine", "quarantine.html", _quarantine),
    Page("drift", "/drift", "/api/drift", "drift.html", _drift),
    Page("jobs", "/jobs", "/api/jobs", "jobs.html", _jobs),
]


# ---- rendering -------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.1f} s"


def _number(value: int | float | None) -> str:
    return "-" if value is None else f"{value:,}"


def stream_charts(page: queries.StreamPage, end: datetime) -> list[Markup]:
    runs = [r for r in page.runs if r.finished_at is not None]
    records = [
        Series("read", [(r.started_at, r.read) for r in runs]),
        Series("written", [(r.started_at, r.written) for r in runs]),
    ]
    duration = [Series("duration", [(r.started_at, r.duration_seconds or 0.0) for r in runs])]
    return [
        time_chart("records per run", records, page.since, end),
        time_chart("run duration", duration, page.since, end, unit=" s"),
    ]


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # quarantined records are hostile input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        duration=_duration,
        number=_number,
        urlkey=lambda key: quote(key, safe=""),
        json=lambda value: orjson.dumps(value, option=orjson.OPT_INDENT_2).decode(),
    )
    env.globals.update(stream_charts=stream_charts)
    return env


def _html(page: Page, templates: jinja2.Environment) -> Handler:
    template = templates.get_template(page.template)

    async def handler(request: web.Request) -> web.Response:
        data = await page.load(request)
        settings = request.app[SETTINGS]
        body = template.render(
            page=data,
            name=page.name,
            now=_now(request),
            queue=settings.execution.backend == "queue",
            query=request.query,
            api=request.rel_url.with_path(
                page.api_path.replace("{key}", quote(request.match_info.get("key", ""), safe="")),
                encoded=True,
            ),
        )
        return web.Response(text=body, content_type="text/html")

    return handler


def _json(page: Page) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        data = await page.load(request)
        body = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        return web.Response(body=body, content_type="application/json")

    return handler


# ---- what went wrong --------------------------------------------------------------------------


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class DatabaseProblem:
    """Why a page could not be read: `error` is "insufficient_privilege" (then `login`,
    `missing` and `fix` say which login lacks what, and the statement that gives it),
    "database_unavailable" (no answer: down, unreachable, connection lost) or "database_error"
    (it answered, and refused the query)."""

    error: str
    title: str
    message: str
    login: str | None = None
    missing: str | None = None
    fix: str | None = None


def database_problem(exc: BaseException, login: str) -> DatabaseProblem:
    missing = dberrors.read_privilege_denied(exc)
    if missing is not None:
        fix = f"GRANT pipeline_dashboard TO {_quoted(login)};"
        return DatabaseProblem(
            error="insufficient_privilege",
            title="The dashboard's login may not read this",
            message=f"login {_quoted(login)} lacks {missing}, which this page reads; "
            f"grant it the dashboard's role: {fix}",
            login=login,
            missing=missing,
            fix=fix,
        )
    error = dberrors.driver_error(exc)
    said = secrets.redact(f"{type(error).__name__}: {error}".strip().splitlines()[0])
    if isinstance(error, OSError) or dberrors.connection_lost(exc):
        return DatabaseProblem(
            error="database_unavailable",
            title="The dashboard cannot reach the database",
            message=f"cannot reach the database ({said}). Check DATABASE_URL and that Postgres "
            "is up; the pages answer again once it does.",
        )
    return DatabaseProblem(
        error="database_error",
        title="The database refused this page's query",
        message=f"the database refused this page's query ({said}). If it persists, check that "
        "the schema is current (pipeline db upgrade) and the server's log.",
    )


def _twin(request: web.Request) -> str:
    """The JSON twin of a page's URL (the page's own URL under /api)."""
    if request.path.startswith("/api/"):
        return str(request.rel_url)
    path = "/api/overview" if request.path == "/" else "/api" + request.rel_url.raw_path
    return str(request.rel_url.with_path(path, encoded=True))


def _problem_response(request: web.Request, problem: DatabaseProblem) -> web.Response:
    if request.path.startswith("/api/"):
        body = {k: v for k, v in asdict(problem).items() if v is not None and k != "title"}
        return web.Response(
            status=503,
            body=orjson.dumps(body, option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )
    html = (
        request.app[TEMPLATES]
        .get_template("error.html")
        .render(
            page=problem,
            name="error",
            now=_now(request),
            queue=request.app[SETTINGS].execution.backend == "queue",
            api=_twin(request),
        )
    )
    return web.Response(status=503, text=html, content_type="text/html")


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The security headers on every answer; database errors as the dashboard's own page."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    except dberrors.DATABASE_ERRORS as exc:
        problem = database_problem(exc, request.app[ENGINE].url.username or "")
        log.error(
            "dashboard_database_error",
            path=request.path,
            error=problem.error,
            detail=problem.missing or problem.message,
        )
        response = _problem_response(request, problem)
    except Exception:
        # A bug; aiohttp's own 500 would go out without the headers.
        log.exception("dashboard_request_failed", path=request.path)
        response = web.Response(
            status=500,
            text="the dashboard failed on this request (a bug: its log has the traceback)\n",
        )
    response.headers.update(SECURITY_HEADERS)
    return response


def build_app(
    engine: AsyncEngine,
    settings: Settings,
    *,
    token: str | None = None,
    metrics: Handler | None = None,
    clock: Callable[[], datetime] | None = None,
    allowed_hosts: Collection[str] = LOOPBACK_NAMES,
) -> web.Application:
    """The dashboard over `engine` (give it a read-only one: `db.create_engine(url,
    read_only=True)`). `token`: required of every request. `metrics`: a handler served at
    `/metrics` (the Prometheus exposition), behind the same token when one is set.
    `allowed_hosts`: the Host names it answers to (`hosts.allowed_names(bind, configured)`;
    the loopback names by default)."""
    now = clock or (lambda: datetime.now(UTC))
    middlewares = [
        _headers,
        host_check(frozenset(allowed_hosts)),
        *([token_middleware(token, now)] if token else []),
        params.well_formed_url,
    ]
    app = web.Application(middlewares=middlewares)
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[CLOCK] = now
    templates = app[TEMPLATES] = _templates()
    for page in PAGES:
        app.router.add_get(page.path, _html(page, templates), name=page.name)
        app.router.add_get(page.api_path, _json(page), name=f"api_{page.name}")
    app.router.add_static("/static/", HERE / "static", name="static")
    if metrics is not None:
        app.router.add_get("/metrics", metrics, name="metrics")
    return app


async def serve(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until `stop` is set. `ready` is called once the port is listening."""
    runner = web.AppRunner(app, access_log=None, max_line_size=MAX_REQUEST_LINE)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("dashboard_serving", url=site.name)
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        await runner.cleanup()
