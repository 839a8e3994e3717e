"""The `pipeline` command. Management commands live here and nowhere else; only this module
reads settings from files and the environment.

Exit codes: 0 success; 1 a stream failed (or was interrupted); 2 usage or configuration error,
nothing was run; 3 every stream finished but some records were quarantined.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from pipeline.config import ConfigError, Settings, load_settings, resolve_config_path
from pipeline.errors import PipelineError
from pipeline.gctune import tune_for_bulk_records
from pipeline.logs import configure_logging, get_logger, secrets
from pipeline.report import console

if TYPE_CHECKING:
    from pipeline.sandbox import SandboxSource

log = get_logger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUARANTINED = 0, 1, 2, 3


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
    """An engine that has connected once: any refusal is one line naming the setting (exit 2)."""
    from pipeline import db, dberrors

    url = url or await _database_url(settings)
    engine = db.create_engine(url)
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


async def _require_current_schema(engine: Any) -> None:
    from pipeline import db

    async with engine.connect() as conn:
        current = await db.current_revision(conn)
    head = db.head_revision()
    if current != head:
        raise ConfigError(
            f"the database schema is at revision {current or 'none'}, this version needs {head}; "
            "run `pipeline db upgrade` first"
        )


# ---- commands --------------------------------------------------------------------------------


async def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from pipeline import db

    settings = _settings(args, require_file=False)
    engine = await _engine_for(settings)
    try:
        await db.upgrade(engine)
        async with engine.connect() as conn:
            revision = await db.current_revision(conn)
    finally:
        await engine.dispose()
    console().print(f"database schema at revision {revision} (head)")
    return EXIT_OK


EXIT_INTERRUPTED = 130


async def _run_streams(
    args: argparse.Namespace,
    names: Sequence[str],
    mode: Any,
    progress: Any = None,
    check: Callable[[list[Any]], None] | None = None,
) -> tuple[list[Any], bool]:
    """Validate, connect, check the schema, run; a first SIGTERM/Ctrl-C stops at a page
    boundary. `check` may refuse the chosen streams (a ConfigError) before anything runs.
    Returns the outcomes and whether a stop was asked for."""
    from pipeline.run import Runner
    from pipeline.shutdown import GracefulStop
    from pipeline.targets import select_streams

    settings = _settings(args, require_file=True)
    targets = select_streams(settings, names)
    if not targets:
        raise ConfigError(
            f"{settings.path}: no enabled stream; add a [sources.<name>] table or enable a stream"
        )
    if check is not None:
        check(targets)
    stop = GracefulStop()
    stop.install()
    engine = await _engine_for(settings)
    try:
        await _require_current_schema(engine)
        outcomes = await Runner(engine, mode=mode, stop=stop.event, progress=progress).run(targets)
    finally:
        await engine.dispose()
    return outcomes, stop.event.is_set()


async def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.report import exit_code, print_outcomes
    from pipeline.run import Mode

    outcomes, stopped = await _run_streams(args, args.streams, Mode("sync"))
    print_outcomes(outcomes, console())
    return EXIT_INTERRUPTED if stopped else exit_code(outcomes)


async def cmd_reconcile(args: argparse.Namespace) -> int:
    from pipeline.report import exit_code, print_outcomes
    from pipeline.run import Mode

    outcomes, stopped = await _run_streams(args, args.streams, Mode("reconcile"))
    print_outcomes(outcomes, console(), title="reconcile")
    return EXIT_INTERRUPTED if stopped else exit_code(outcomes)


async def cmd_backfill(args: argparse.Namespace) -> int:
    from pipeline.report import ProgressDisplay, exit_code, print_outcomes
    from pipeline.run import Mode

    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if until is not None and until < since:
        raise ConfigError("--until is before --since; give a window that moves forward in time")
    mode = Mode("backfill", since=since, until=until, dry_run=args.dry_run)
    label = f"backfill {args.stream}" + (" (dry run)" if args.dry_run else "")
    with ProgressDisplay(console(), label) as progress:
        outcomes, stopped = await _run_streams(args, [args.stream], mode, progress)
    if args.dry_run:
        for o in outcomes:
            console().print(
                f"{o.key}: would read {o.pages} pages and upsert {o.totals.read} records "
                f"changed from {since.isoformat()} to {until.isoformat() if until else 'now'}"
                + (f" ({o.status}: {o.error})" if o.error else ""),
                highlight=False,
            )
    else:
        print_outcomes(outcomes, console(), title=label)
    return EXIT_INTERRUPTED if stopped else exit_code(outcomes)


async def cmd_rederive(args: argparse.Namespace) -> int:
    from pipeline.rederive import BATCH_ROWS, refusal
    from pipeline.report import ProgressDisplay, exit_code, print_outcomes
    from pipeline.run import Mode

    since, until = _moment(args.since, "--since"), _moment(args.until, "--until")
    if since is not None and until is not None and until < since:
        raise ConfigError("--until is before --since; give a window that moves forward in time")
    batch_rows = BATCH_ROWS if args.batch_size is None else args.batch_size
    if batch_rows < 1:
        raise ConfigError(f"--batch-size {batch_rows}: give a number of rows, 1 or more")

    def check(targets: list[Any]) -> None:
        for target in targets:
            reason = refusal(target.stream, windowed=since is not None or until is not None)
            if reason:
                raise ConfigError(f"cannot rederive {target.key}: {reason}")

    mode = Mode("rederive", since=since, until=until, batch_rows=batch_rows)
    label = f"rederive {args.stream}"
    with ProgressDisplay(console(), label, event="rederive_progress") as progress:
        outcomes, stopped = await _run_streams(args, [args.stream], mode, progress, check)
    print_outcomes(outcomes, console(), title=label)
    return EXIT_INTERRUPTED if stopped else exit_code(outcomes)


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
    from pipeline.state import forget
    from pipeline.targets import select_streams

    settings = _settings(args, require_file=True)
    [target] = select_streams(settings, [args.stream])
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
        await _require_current_schema(engine)
        async with engine.connect() as sa_conn:
            raw = await sa_conn.get_raw_connection()
            conn: Any = raw.driver_connection
            forgot = await forget(conn, target.key)
            await forget(conn, f"{target.key}#backfill")
            await forget(conn, f"{target.key}#rederive")
            await sa_conn.commit()
    finally:
        await engine.dispose()
    console().print(
        f"{target.key}: watermark forgotten"
        if forgot
        else f"{target.key}: had no state; nothing to forget"
    )
    return EXIT_OK


async def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline.scheduler import StreamScheduler
    from pipeline.shutdown import GracefulStop

    settings = _settings(args, require_file=True)
    stop = GracefulStop(grace_seconds=args.grace)
    stop.install()
    engine = await _engine_for(settings)
    try:
        await _require_current_schema(engine)
        await StreamScheduler(settings, engine, stop.event).serve(grace_seconds=args.grace)
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
        await _require_current_schema(engine)
        statuses = await stream_statuses(engine, settings)
    finally:
        await engine.dispose()
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print_statuses(statuses, console())
    return EXIT_FAILED if needs_attention(statuses) else EXIT_OK


def _sizes(args: argparse.Namespace) -> dict[str, int]:
    return {s.name: getattr(args, s.name) for sb in _sandboxes().values() for s in sb.sizes}


async def cmd_sandbox(args: argparse.Namespace) -> int:
    from pipeline.demo import serve_sandbox

    ports = {name: getattr(args, f"{name}_port") for name in _sandboxes()}
    await serve_sandbox(sizes=_sizes(args), host=args.host, ports=ports, console=console())
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


# ---- plumbing --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Incremental syncs from SaaS REST APIs into Postgres.",
        epilog="Exit codes: 0 ok, 1 a stream failed, 2 usage/config error, "
        "3 ok but records were quarantined.",
    )
    parser.add_argument(
        "--config", help="pipeline.toml to use (default: $PIPELINE_CONFIG, ./pipeline.toml)"
    )
    parser.add_argument(
        "--log-format",
        choices=("console", "json"),
        help="default: console on a terminal, else json",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_commands.add_parser(
        "upgrade", help="apply migrations up to the latest (idempotent)"
    ).set_defaults(handler=cmd_db_upgrade)

    sync = commands.add_parser("sync", help="sync streams now (all enabled ones when none named)")
    sync.add_argument("streams", nargs="*", metavar="STREAM", help="source.stream or stream")
    sync.set_defaults(handler=cmd_sync)

    status = commands.add_parser(
        "status",
        help="per stream: watermark, last run, rows, freshness; exit 1 when stale or failed",
    )
    status.add_argument("--json", action="store_true", help="machine-readable, for monitoring")
    status.set_defaults(handler=cmd_status)

    schedule = commands.add_parser(
        "schedule", help="run every enabled stream on its cron until SIGTERM/Ctrl-C"
    )
    schedule.add_argument(
        "--grace", type=float, default=30.0, help="seconds running streams get to stop (default 30)"
    )
    schedule.set_defaults(handler=cmd_schedule)

    backfill = commands.add_parser(
        "backfill",
        help="re-read a window of a stream and rewrite its rows; the watermark never moves back",
    )
    backfill.add_argument("stream", metavar="STREAM")
    backfill.add_argument("--since", required=True, help="ISO date or date-time (UTC if no zone)")
    backfill.add_argument("--until", help="ISO date or date-time (default: now)")
    backfill.add_argument("--dry-run", action="store_true", help="count what it would read")
    backfill.set_defaults(handler=cmd_backfill)

    rederive = commands.add_parser(
        "rederive",
        help="recompute typed columns and child tables from the stored data column, "
        "no API call (e.g. after a migration adds a column)",
        description="Retype every stored row of STREAM from its data column, in batches by "
        "primary key, each with its checkpoint: the same command resumes after a crash. "
        "Columns that come from outside the record (partition, read date) and _hash keep their "
        "stored values; a record that no longer types is quarantined and its row kept.",
    )
    rederive.add_argument("stream", metavar="STREAM")
    rederive.add_argument(
        "--since",
        help="ISO date or date-time (UTC if no zone): only rows whose stored change time "
        "(_cursor) is at or after it",
    )
    rederive.add_argument("--until", help="as --since: only rows changed at or before it")
    rederive.add_argument("--batch-size", type=int, help="rows per transaction (default 2000)")
    rederive.set_defaults(handler=cmd_rederive)

    reconcile = commands.add_parser(
        "reconcile", help="compare every source id with the table: deletions, missing, stale rows"
    )
    reconcile.add_argument("streams", nargs="+", metavar="STREAM")
    reconcile.set_defaults(handler=cmd_reconcile)

    reset = commands.add_parser("reset", help="forget a stream's watermark (asks first)")
    reset.add_argument("stream", metavar="STREAM")
    reset.add_argument("--yes", action="store_true", help="do not ask")
    reset.set_defaults(handler=cmd_reset)

    sandbox = commands.add_parser("sandbox", help="serve the API simulators in the foreground")
    _size_arguments(sandbox)
    sandbox.add_argument("--host", default="127.0.0.1")
    for name, declared in _sandboxes().items():
        sandbox.add_argument(f"--{name}-port", type=int, default=declared.port)
    sandbox.set_defaults(handler=cmd_sandbox)

    demo = commands.add_parser(
        "demo",
        help="simulators + database (embedded unless DATABASE_URL): migrate, sync, change, sync",
    )
    _size_arguments(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def _size_arguments(parser: argparse.ArgumentParser) -> None:
    """How much data the simulators hold: each source's declared sizes."""
    for declared in _sandboxes().values():
        for size in declared.sizes:
            parser.add_argument(size.flag, type=int, default=size.default, help=size.help)


def _sandboxes() -> dict[str, SandboxSource[Any]]:
    """The simulators' declarations (`pipeline.sandbox.SANDBOXES`), by source name."""
    from pipeline.sandbox import SANDBOXES

    return SANDBOXES


async def _run_cancellable(
    handler: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    """Until a command installs its graceful stop, SIGTERM cancels like Ctrl-C."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        try:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        except (NotImplementedError, RuntimeError):
            pass
    return await handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        return asyncio.run(_run_cancellable(args.handler, args))
    except ConfigError as exc:
        print(f"pipeline: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"pipeline: {secrets.redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("pipeline: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `pipeline` command's process entry point (tests call `main` in-process instead)."""
    tune_for_bulk_records()
    sys.exit(main())


if __name__ == "__main__":
    run()
