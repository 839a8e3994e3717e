"""The handlers of the `pipeline` command's subcommands (its parser is `pipeline.cli`). Only
these and the parser read settings from files and the environment.

Exit codes: 0 success; 1 a stream failed (or was interrupted); 2 usage or configuration error,
nothing was run; 3 every stream finished but some records were quarantined.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, Settings, load_settings, resolve_config_path
from pipeline.logs import get_logger, secrets
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
