"""The `pipeline` command: its parser and entry point. The management commands' handlers are
in `pipeline.commands`; nothing else reads settings from files and the environment.

Exit codes: 0 success; 1 a stream failed (or was interrupted); 2 usage or configuration error,
nothing was run; 3 every stream finished but some records were quarantined.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from pipeline.commands import (
    EXIT_FAILED,
    EXIT_USAGE,
    _sandboxes,
    cmd_backfill,
    cmd_dashboard,
    cmd_db_upgrade,
    cmd_demo,
    cmd_reconcile,
    cmd_rederive,
    cmd_reset,
    cmd_sandbox,
    cmd_schedule,
    cmd_status,
    cmd_sync,
    cmd_worker,
)
from pipeline.config import ConfigError
from pipeline.errors import PipelineError
from pipeline.gctune import tune_for_bulk_records
from pipeline.logs import configure_logging, get_logger, secrets
from pipeline.text import printable

log = get_logger(__name__)

# ---- plumbing --------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the command, what is wrong, where the help is)
    rather than the usage block: a long usage pushes the reason off a narrow log view."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {printable(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    sync.add_argument(
        "--no-wait",
        action="store_true",
        help="queue backend: queue the jobs and return without waiting for them",
    )
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
        "--grace",
        type=_grace,
        default=30.0,
        help="seconds running streams get to stop (default 30)",
    )
    _metrics_arguments(schedule)
    schedule.set_defaults(handler=cmd_schedule)

    worker = commands.add_parser(
        "worker",
        help="queue backend: run stream jobs from the queue until SIGTERM/Ctrl-C",
        description="Takes jobs that `sync`, `backfill` and `schedule` queue when [execution] "
        'backend = "queue", on this machine or any other reaching the database. On SIGTERM it '
        "takes no more jobs; running streams stop at a page boundary and their jobs go back to "
        "the queue for another worker.",
    )
    worker.add_argument(
        "--concurrency", type=_concurrency, default=4, help="jobs run at once, 1-256 (default 4)"
    )
    worker.add_argument(
        "--grace",
        type=_grace,
        default=30.0,
        help="seconds running streams get to reach a page boundary on stop (default 30)",
    )
    _metrics_arguments(worker)
    worker.set_defaults(handler=cmd_worker)

    backfill = commands.add_parser(
        "backfill",
        help="re-read a window of a stream and rewrite its rows; the watermark never moves back",
    )
    backfill.add_argument("stream", metavar="STREAM")
    backfill.add_argument("--since", required=True, help="ISO date or date-time (UTC if no zone)")
    backfill.add_argument("--until", help="ISO date or date-time (default: now)")
    backfill.add_argument("--dry-run", action="store_true", help="count what it would read")
    backfill.add_argument(
        "--slices",
        type=_slices,
        default=1,
        help="split the window in N windows run side by side, each resumable on its own "
        "(jobs for the workers with the queue backend); default 1",
    )
    backfill.add_argument(
        "--no-wait",
        action="store_true",
        help="queue backend: queue the jobs and return without waiting for them",
    )
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
    rederive.add_argument(
        "--batch-size", type=_batch_rows, help="rows per transaction, 1-100000 (default 2000)"
    )
    rederive.set_defaults(handler=cmd_rederive)

    reconcile = commands.add_parser(
        "reconcile", help="compare every source id with the table: deletions, missing, stale rows"
    )
    reconcile.add_argument("streams", nargs="+", metavar="STREAM")
    reconcile.add_argument(
        "--confirm-deletes",
        action="store_true",
        help="apply every deletion it confirms, even beyond the stream's max_delete_fraction "
        "(after a run held them back: check the source first)",
    )
    reconcile.set_defaults(handler=cmd_reconcile)

    reset = commands.add_parser("reset", help="forget a stream's watermark (asks first)")
    reset.add_argument("stream", metavar="STREAM")
    reset.add_argument("--yes", action="store_true", help="do not ask")
    reset.set_defaults(handler=cmd_reset)

    dashboard = commands.add_parser(
        "dashboard",
        help="read-only web pages: freshness, runs, quarantine, schema drift, jobs (JSON under /api)",
        description="Serves the dashboard until SIGTERM/Ctrl-C. It only reads (every transaction "
        "READ ONLY); a login in the pipeline_dashboard role is enough. Binding beyond loopback "
        "needs PIPELINE_DASHBOARD_TOKEN (at least 32 random characters), which every request "
        "must then present (Authorization: Bearer, or ?token= once in a browser, which keeps a "
        "cookie for 12 hours). It answers only requests whose Host is a loopback name, the "
        "bound address or a name allowed with --allow-host or PIPELINE_DASHBOARD_HOSTS "
        "(comma-separated): a defence against DNS rebinding.",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    dashboard.add_argument("--port", type=_port, default=8765, help="default 8765")
    dashboard.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="answer requests whose Host is NAME too (a proxy's or a container's name; "
        "repeatable); PIPELINE_DASHBOARD_HOSTS adds more",
    )
    dashboard.set_defaults(handler=cmd_dashboard)

    sandbox = commands.add_parser("sandbox", help="serve the API simulators in the foreground")
    _size_arguments(sandbox)
    sandbox.add_argument("--host", default="127.0.0.1")
    for name, declared in _sandboxes().items():
        sandbox.add_argument(f"--{name}-port", type=_port, default=declared.port)
    sandbox.add_argument(
        "--accounts",
        type=_account_count,
        default=1,
        metavar="N",
        help="each simulator plays N accounts of its API on its one port (1-26), "
        "each with its own data and credentials: one [sources.<source>_a] ... table each",
    )
    sandbox.set_defaults(handler=cmd_sandbox)

    demo = commands.add_parser(
        "demo",
        help="simulators + database (embedded unless DATABASE_URL): migrate, sync, change, sync",
    )
    _size_arguments(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def _metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """`/metrics` for Prometheus, off unless a port is given."""
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: not served)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 in a container)",
    )


def _port(value: str) -> int:
    return _bounded_int(value, 0, 65535, "a TCP port")


def _bounded_int(value: str, low: int, high: int, what: str) -> int:
    """A whole number in [low, high]; anything else is one line and exit 2 (argparse)."""
    number = int(value) if value.isascii() and value.isdigit() and len(value) < 12 else None
    if number is None or not low <= number <= high:
        raise argparse.ArgumentTypeError(f"{value!r}: give {what} from {low} to {high:,}")
    return number


def _concurrency(value: str) -> int:
    return _bounded_int(value, 1, 256, "a number of jobs")


def _batch_rows(value: str) -> int:
    return _bounded_int(value, 1, 100_000, "a number of rows")


def _size(value: str) -> int:
    return _bounded_int(value, 0, 10_000_000, "a number of records")


def _slices(value: str) -> int:
    return _bounded_int(value, 1, 1_000_000, "a number of slices")


def _grace(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 3600:  # nan fails both
        raise argparse.ArgumentTypeError(f"{value!r}: give seconds from 0 to 3600")
    return seconds


def _account_count(value: str) -> int:
    return _bounded_int(value, 1, 26, "a number of accounts")


def _size_arguments(parser: argparse.ArgumentParser) -> None:
    """How much data the simulators hold: each source's declared sizes."""
    for declared in _sandboxes().values():
        for size in declared.sizes:
            parser.add_argument(size.flag, type=_size, default=size.default, help=size.help)


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
        print(f"pipeline: {printable(secrets.redact(str(exc)))}", file=sys.stderr)
        return EXIT_USAGE
    except PipelineError as exc:
        print(f"pipeline: {printable(secrets.redact(str(exc)))}", file=sys.stderr)
        return EXIT_FAILED
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("pipeline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # A right the login lacks, met past the checks before the work (`pipeline.grants`):
        # still one line, never a traceback.
        from pipeline import dberrors

        if not dberrors.is_database_error(exc) or (refused := dberrors.refused(exc)) is None:
            raise
        print(
            f"pipeline {args.command}: {printable(secrets.redact(refused))}; run it as the role "
            "that ran `pipeline db upgrade`, or grant this login what it needs",
            file=sys.stderr,
        )
        return EXIT_USAGE


def run() -> NoReturn:
    """The `pipeline` command's process entry point (tests call `main` in-process instead)."""
    tune_for_bulk_records()
    sys.exit(main())


if __name__ == "__main__":
    run()
