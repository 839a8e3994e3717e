"""The handlers of the `pipeline` command's subcommands (its parser is `pipeline.cli`). Only
these and the parser read settings from files and the environment.

Exit codes: 0 success; 1 a stream failed (or was interrupted); 2 usage or configuration error,
nothing was run; 3 every stream finished but some records were quarantined.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipeline import exits
from pipeline.config import ConfigError, Settings, load_settings, resolve_config_path
from pipeline.logs import get_logger, secrets
from pipeline.report import console, shown

if TYPE_CHECKING:
    from pipeline.grants import Need
    from pipeline.sandbox import SandboxSource

log = get_logger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = (
    exits.OK,
    exits.FAILED,
    exits.USAGE,
    exits.INTERRUPTED,
)


def _settings(args: argparse.Namespace, *, require_file: bool) -> Settings:
    from pipeline.sources import SOURCES

    path = resolve_config_path(args.config, os.environ)
    if path is None and require_file:
        raise ConfigError(
            "no configuration: pass --config PATH, set PIPELINE_CONFIG, or create ./pipeline.toml "
            "(start from pipeline.example.toml)"
        )
    settings = load_settings(path, os.environ, SOURCES)
    secrets.add(settings.secret_values())
    return settings


async def _database_url(settings: Settings) -> str:
    from pipeline import db

    url = settings.database_url or await asyncio.to_thread(db.start_embedded, settings.embedded_dir)
    secrets.add([p for p in [_password(url)] if p])
    return url


async def _engine_for(settings: Settings, url: str | None = None) -> Any:
    """An engine that has connected once: any refusal is one line naming the setting (exit 2).
    Its pool holds a connection for each stream the process may run at once, and a few more
    (`pipeline.run.slots`)."""
    from pipeline import db, dberrors
    from pipeline.run.slots import pool_size

    url = url or await _database_url(settings)
    engine = db.create_engine(url, pool_size=pool_size(settings.execution.max_streams))
    try:
        await db.wait_until_reachable(engine)
    except dberrors.ConnectFailed as exc:
        await engine.dispose()
        message = dberrors.connect_message(exc.error, settings.database_setting, url)
        raise ConfigError(message) from None
    return engine


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).password


async def _require_current_schema(engine: Any, need: Need | None = None, command: str = "") -> None:
    """The schema at this version's head, and the login allowed what the command `need`s
    (`pipeline.grants`); each refusal one line (exit 2)."""
    from pipeline import db, grants

    async with engine.connect() as conn:
        if need is not None:
            login, lacks = await grants.missing(conn, need)
            if lacks:
                raise ConfigError(grants.refusal(login, lacks, need, command))
        current = await db.current_revision(conn)
    head = db.head_revision()
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'}, this version needs {head}; "
            "run `pipeline db upgrade` first"
        )


# ---- commands --------------------------------------------------------------------------------


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from pipeline import db, dberrors

    settings = _settings(args, require_file=False)
    engine = await _engine_for(settings)
    try:
        try:
            await db.upgrade(engine)
        except dberrors.DATABASE_ERRORS as exc:
            if (refused := dberrors.refused(exc)) is None:
                raise
            raise ConfigError(
                f"pipeline db upgrade: {refused}; run it as the database's owner (or a role with "
                "CREATE on the database that owns the pipeline's schemas), not a reader"
            ) from None
        async with engine.connect() as conn:
            revision = await db.current_revision(conn)
    finally:
        await engine.dispose()
    console().print(f"database schema at revision {revision} (head)")
    return EXIT_OK


async def _run_streams(
    args: argparse.Namespace,
    names: Sequence[str],
    mode: Any,
    progress: Any = None,
    check: Callable[[list[Any]], None] | None = None,
    *,
    queueable: bool = True,
    slices: int = 1,
) -> tuple[list[Any], bool]:
    """Validate, connect, check the schema, run; a first SIGTERM/Ctrl-C stops at a page
    boundary. `check` may refuse the chosen streams (a ConfigError) before anything runs.
    With the queue backend (and a `queueable` command) the runs are jobs for the workers, and
    a stop ends the waiting only. `slices` > 1 cuts a backfill's window in that many runs side
    by side (`pipeline.run.slices`). Returns the outcomes and whether a stop was asked for."""
    from pipeline.extract.limits import LimitsBySource
    from pipeline.run import Runner
    from pipeline.run.slices import finished, planned_slices
    from pipeline.run.slots import StreamSlots
    from pipeline.shutdown import GracefulStop, StoppedBeforeStart
    from pipeline.targets import select_streams

    settings = _settings(args, require_file=True)
    targets = select_streams(settings, names)
    if not targets:
        raise ConfigError(
            f"{settings.path}: no enabled stream; add a [sources.<name>] table or enable a stream"
        )
    if check is not None:
        check(targets)
    queued = queueable and settings.execution.backend == "queue"
    stop = GracefulStop()
    if not queued:
        stop.install()
    try:
        url = await stop.unless_stopped(_database_url(settings))
        engine = await stop.unless_stopped(_engine_for(settings, url))
    except StoppedBeforeStart:
        return [], True
    try:
        await stop.unless_stopped(_require_current_schema(engine, "write", args.command))
        modes = [mode]
        if slices > 1:
            modes = await stop.unless_stopped(planned_slices(engine, targets, mode, slices))
        if queued:
            outcomes, stopped = await _through_queue(args, engine, url, targets, modes)
            if slices > 1:
                await finished(engine, targets, outcomes)
            return outcomes, stopped
        # Slices share each source's client (one login), cap and rate, and the stream slots.
        runner = Runner(
            engine,
            mode=mode,
            stop=stop.event,
            progress=progress,
            limits=LimitsBySource(),
            slots=StreamSlots(settings.execution.max_streams),
        )
        found = await runner.run_each(targets, modes)
        labels = [m for m in modes for _ in targets]
        outcomes = [_labelled(o, m) for o, m in zip(found, labels, strict=True)]
        if slices > 1:
            await finished(engine, targets, outcomes)
    except StoppedBeforeStart:
        return [], True
    finally:
        await engine.dispose()
    return outcomes, stop.event.is_set()


def _labelled(outcome: Any, mode: Any) -> Any:
    """A slice's outcome names its window, as the one stream's slices share its key."""
    if mode.sliced:
        outcome.key = f"{outcome.key} [{mode.window}]"
    return outcome


async def _through_queue(
    args: argparse.Namespace, engine: Any, url: str, targets: list[Any], modes: list[Any]
) -> tuple[list[Any], bool]:
    """Defer one job per stream and, unless `--no-wait`, wait for them; Ctrl-C ends the wait,
    not the jobs."""
    from pipeline.queue.app import StreamJob, queue_app
    from pipeline.queue.defer import defer
    from pipeline.queue.waiting import wait_for

    app = queue_app(url, pool_size=2)
    async with app.open_async():
        deferred = [await defer(app, StreamJob.new(t.key, m)) for m in modes for t in targets]
    for d in deferred:
        how = "already waiting" if d.joined else "queued"
        console().print(
            f"{shown(d.job.stream)}: job {d.job_id} {how} (run {d.job.run_id})", highlight=False
        )
    if getattr(args, "no_wait", False):
        return [], False
    async with engine.connect() as sa_conn:
        await sa_conn.execution_options(isolation_level="AUTOCOMMIT")
        raw = await sa_conn.get_raw_connection()
        try:
            outcomes = await wait_for(raw.driver_connection, deferred, console())
        except asyncio.CancelledError:
            console().print(
                "stopped waiting; the jobs stay queued for the workers", highlight=False
            )
            return [], True
    return [_labelled(o, d.job.mode()) for o, d in zip(outcomes, deferred, strict=True)], False


async def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.report import print_outcomes
    from pipeline.run import Mode

    outcomes, stopped = await _run_streams(args, args.streams, Mode("sync"))
    if outcomes:
        print_outcomes(outcomes, console())
    return EXIT_INTERRUPTED if stopped else exits.for_outcomes(outcomes)


async def cmd_reconcile(args: argparse.Namespace) -> int:
    from pipeline.report import print_outcomes
    from pipeline.run import Mode

    mode = Mode("reconcile", confirm_deletes=args.confirm_deletes)
    outcomes, stopped = await _run_streams(args, args.streams, mode)
    if outcomes:
        print_outcomes(outcomes, console(), title="reconcile")
    return EXIT_INTERRUPTED if stopped else exits.for_outcomes(outcomes)


async def cmd_backfill(args: argparse.Namespace) -> int:
    from pipeline.report import ProgressDisplay, print_outcomes
    from pipeline.run import Mode
    from pipeline.run.slices import refusal

    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if until is not None and until < since:
        raise ConfigError("--until is before --since; give a window that moves forward in time")
    if reason := refusal(args.slices, since, until):
        raise ConfigError(reason)
    mode = Mode("backfill", since=since, until=until, dry_run=args.dry_run)
    label = f"backfill {args.stream}" + (" (dry run)" if args.dry_run else "")
    with ProgressDisplay(console(), label) as progress:
        outcomes, stopped = await _run_streams(
            args, [args.stream], mode, progress, slices=args.slices
        )
    if args.dry_run and outcomes:
        for o in outcomes:
            console().print(
                f"{shown(o.key)}: would read {o.pages} pages and upsert {o.totals.read} records "
                f"changed from {since.isoformat()} to {until.isoformat() if until else 'now'}"
                + (f" ({o.status}: {shown(o.error)})" if o.error else ""),
                highlight=False,
            )
    elif outcomes:
        print_outcomes(outcomes, console(), title=label)
    return EXIT_INTERRUPTED if stopped else exits.for_outcomes(outcomes)


async def cmd_rederive(args: argparse.Namespace) -> int:
    from pipeline.rederive import BATCH_ROWS, refusal
    from pipeline.report import ProgressDisplay, print_outcomes
    from pipeline.run import Mode

    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if since is not None and until is not None and until < since:
        raise ConfigError("--until is before --since; give a window that moves forward in time")
    batch_rows = BATCH_ROWS if args.batch_size is None else args.batch_size  # bounded by the parser

    def check(targets: list[Any]) -> None:
        for target in targets:
            reason = refusal(target.stream, windowed=since is not None or until is not None)
            if reason:
                raise ConfigError(f"cannot rederive {target.key}: {reason}")

    mode = Mode("rederive", since=since, until=until, batch_rows=batch_rows)
    label = f"rederive {args.stream}"
    with ProgressDisplay(console(), label, event="rederive_progress") as progress:
        outcomes, stopped = await _run_streams(
            args, [args.stream], mode, progress, check, queueable=False
        )
    print_outcomes(outcomes, console(), title=label)
    return EXIT_INTERRUPTED if stopped else exits.for_outcomes(outcomes)


def _moment(text: str | None, option: str) -> Any:
    """ISO-8601 date or date-time; without a zone it is UTC."""
    from datetime import UTC, datetime

    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r}: not a date or date-time; write e.g. 2024-01-31 or 2024-01-31T12:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def cmd_reset(args: argparse.Namespace) -> int:
    from pipeline.state import forget_stream
    from pipeline.targets import select_streams

    settings = _settings(args, require_file=True)
    targets = select_streams(settings, [args.stream])
    if len(targets) > 1:
        raise ConfigError(
            f"reset {args.stream}: that names {len(targets)} streams "
            f"({', '.join(t.key for t in targets)}); name one as <instance>.<stream>"
        )
    [target] = targets
    key = shown(target.key)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"reset {target.key}: not a terminal; pass --yes to confirm")
        question = f"Forget the watermark of {target.key}? Its next sync reads everything. [y/N] "
        answer = await asyncio.to_thread(input, question)
        if answer.strip().lower() not in ("y", "yes"):
            console().print("Nothing changed.")
            return EXIT_OK
    engine = await _engine_for(settings)
    try:
        await _require_current_schema(engine, "write", "reset")
        async with engine.connect() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            conn: Any = raw.driver_connection
            forgot = await forget_stream(conn, target.key)
    finally:
        await engine.dispose()
    if forgot is None:
        console().print(
            f"{key}: a run of it is in progress (it holds the stream's lock): nothing was "
            "forgotten, since the run would write its state back; reset it once it has ended",
            highlight=False,
        )
        return exits.SKIPPED
    console().print(
        f"{key}: forgot {', '.join(forgot)}"
        if forgot
        else f"{key}: had no state; nothing to forget",
        highlight=False,
    )
    return EXIT_OK


@contextlib.asynccontextmanager
async def _serving_metrics(
    args: argparse.Namespace, settings: Settings, engine: Any
) -> AsyncIterator[None]:
    """`/metrics` while the block runs, when `--metrics-port` is given: every enabled
    stream's series declared, its last success read from the database first."""
    if args.metrics_port is None:
        yield
        return
    from pipeline.metrics.freshness import Freshness
    from pipeline.metrics.server import serving_metrics
    from pipeline.targets import select_streams

    freshness = Freshness(engine, select_streams(settings, []))
    freshness.declare()
    await freshness.refresh()
    async with serving_metrics(args.metrics_host, args.metrics_port, refresh=freshness.refresh):
        yield


async def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline.scheduler import StreamScheduler
    from pipeline.shutdown import GracefulStop

    settings = _settings(args, require_file=True)
    stop = GracefulStop(grace_seconds=args.grace)
    stop.install()
    url = await _database_url(settings)
    engine = await _engine_for(settings, url)
    try:
        await _require_current_schema(engine, "write", "schedule")
        async with _serving_metrics(args, settings, engine):
            scheduler = StreamScheduler(settings, engine, stop.event, database_url=url)
            await scheduler.serve(grace_seconds=args.grace)
    finally:
        await engine.dispose()
    return EXIT_OK


async def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.queue.worker import serve
    from pipeline.shutdown import GracefulStop

    settings = _settings(args, require_file=True)
    if settings.execution.backend != "queue":
        raise ConfigError(
            f"{settings.path}: [execution] backend is {settings.execution.backend!r}: syncs run "
            'in the process that asks; set backend = "queue" for workers to take them'
        )
    # The worker's own grace is shorter than the signal's, so it hands jobs back first.
    stop = GracefulStop(grace_seconds=args.grace + 15)
    stop.install()
    url = await _database_url(settings)
    engine = await _engine_for(settings, url)
    try:
        await _require_current_schema(engine, "write", "worker")
    finally:
        await engine.dispose()  # the worker has its own; this one reconnects for /metrics only
    try:
        async with _serving_metrics(args, settings, engine):
            await serve(
                settings,
                url,
                concurrency=args.concurrency,
                stop=stop.event,
                grace_seconds=args.grace,
            )
    finally:
        await engine.dispose()
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    import json

    from pipeline.report import print_statuses
    from pipeline.status import needs_attention, stream_statuses

    settings = _settings(args, require_file=False)
    engine = await _engine_for(settings)
    try:
        await _require_current_schema(engine, "read", "status")
        statuses = await stream_statuses(engine, settings)
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print_statuses(statuses, console())
    return EXIT_FAILED if needs_attention(statuses) else EXIT_OK


async def _check_dashboard_schema(engine: Any) -> None:
    """The schema check, except that a login which may not read the revision gets a warning,
    not a traceback: the dashboard then starts, and its pages say what to grant."""
    from pipeline import dberrors

    try:
        await _require_current_schema(engine)
    except dberrors.DATABASE_ERRORS as exc:
        missing = dberrors.read_privilege_denied(exc)
        if missing is None:
            raise
        login = engine.url.username or ""
        log.warning(
            "dashboard_schema_not_checked",
            login=login,
            missing=missing,
            fix=f'GRANT pipeline_dashboard TO "{login}";',
            consequence="every page answers 503 naming the privilege until it is granted",
        )


async def cmd_dashboard(args: argparse.Namespace) -> int:
    from pipeline import db, dberrors
    from pipeline.dashboard import build_app, serve
    from pipeline.dashboard.auth import TOKEN_ENV, check_bind, check_token
    from pipeline.dashboard.hosts import LOOPBACK_NAMES, allowed_names, configured_names
    from pipeline.shutdown import GracefulStop

    token = os.environ.get(TOKEN_ENV) or None
    if token:
        check_token(token)  # first: its message holds no token, and a short one would mask words
        secrets.add([token])
    check_bind(args.host, token)
    hosts = allowed_names(args.host, configured_names(args.allow_host, os.environ))
    settings = _settings(args, require_file=False)
    stop = GracefulStop(grace_seconds=5)
    stop.install()
    url = await _database_url(settings)
    engine = db.create_engine(
        url, pool_size=5, read_only=True, application_name="pipeline dashboard"
    )
    try:
        try:
            await db.wait_until_reachable(engine)
        except dberrors.ConnectFailed as exc:
            raise ConfigError(
                dberrors.connect_message(exc.error, settings.database_setting, url)
            ) from None
        await _check_dashboard_schema(engine)
        from pipeline.metrics.freshness import Freshness
        from pipeline.metrics.server import metrics_endpoint
        from pipeline.targets import select_streams

        # It runs no stream: its /metrics is each stream's last success, read on a scrape.
        freshness = Freshness(engine, select_streams(settings, []))
        freshness.declare()
        app = build_app(
            engine,
            settings,
            token=token,
            metrics=metrics_endpoint(freshness.refresh),
            allowed_hosts=hosts,
        )
        host = f"[{args.host}]" if ":" in args.host else args.host
        ready = f"dashboard at http://{host}:{args.port}/ (JSON under /api/); Ctrl-C stops it"
        if token:
            ready += "; every request must present the token"
        if more := sorted(hosts - LOOPBACK_NAMES):
            ready += f"; Host names answered besides loopback: {', '.join(more)}"
        try:
            await serve(
                app,
                args.host,
                args.port,
                stop.event,
                ready=lambda: console().print(ready, highlight=False),
            )
        except OSError as exc:
            raise ConfigError(
                f"dashboard: cannot listen on {host}:{args.port} ({exc.strerror or exc}); "
                "choose another --port or --host"
            ) from None
    finally:
        await engine.dispose()
    return EXIT_OK


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    return {s.name: getattr(args, s.name) for sb in _sandboxes().values() for s in sb.sizes}


async def cmd_sandbox(args: argparse.Namespace) -> int:
    from pipeline.demo import serve_sandbox

    ports = {name: getattr(args, f"{name}_port") for name in _sandboxes()}
    await serve_sandbox(
        sizes=_sizes(args),
        host=args.host,
        ports=ports,
        console=console(),
        accounts=args.accounts,
    )
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline import db
    from pipeline.demo import DEMO_DATABASE, run_demo

    settings = _settings(args, require_file=False)
    server_url = await _database_url(settings)
    await (await _engine_for(settings, server_url)).dispose()  # a refusal named as such
    try:
        demo_url = await db.recreate_database(server_url, DEMO_DATABASE)
    except (OSError, asyncpg_errors()) as exc:
        raise ConfigError(
            f"cannot create the demo database '{DEMO_DATABASE}' ({type(exc).__name__}: {exc}); "
            "the demo needs a server where it may create a database"
        ) from None
    engine = await _engine_for(settings, demo_url)
    try:
        return await run_demo(
            engine, sizes=_sizes(args), console=console(), database_url=db.plain_url(demo_url)
        )
    finally:
        await engine.dispose()


def asyncpg_errors() -> type[Exception]:
    import asyncpg

    return asyncpg.PostgresError


def _sandboxes() -> dict[str, SandboxSource[Any]]:
    """The simulators' declarations (`pipeline.sandbox.SANDBOXES`), by source name."""
    from pipeline.sandbox import SANDBOXES

    return SANDBOXES
