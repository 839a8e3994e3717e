"""Human-readable summaries for the terminal (rich tables); machines read `sync_runs` instead."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from pipeline.runner import StreamOutcome
from pipeline.status import StreamStatus

_STYLE = {"succeeded": "green", "failed": "red", "skipped": "yellow", "interrupted": "yellow"}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def console() -> Console:
    """A console that does not squeeze tables to 80 columns when output goes to a file."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def print_outcomes(
    outcomes: Sequence[StreamOutcome], console: Console, title: str = "sync"
) -> None:
    table = Table(title=title, title_justify="left")
    for header in (
        "stream",
        "status",
        "read",
        "inserted",
        "updated",
        "unchanged",
        "quarantined",
        "deleted",
        "pages",
        "seconds",
        "watermark",
    ):
        justify = "left" if header in ("stream", "status", "watermark") else "right"
        table.add_column(header, justify=justify)
    for o in outcomes:
        t = o.totals
        table.add_row(
            o.key,
            f"[{_STYLE.get(o.status, 'white')}]{o.status}[/]",
            str(t.read),
            str(t.inserted),
            str(t.updated),
            str(t.unchanged),
            str(t.quarantined),
            str(o.deleted),
            str(o.pages),
            f"{o.seconds:.2f}",
            _when(o.watermark),
        )
    console.print(table)
    for o in outcomes:
        if o.error:
            console.print(
                f"[{_STYLE.get(o.status, 'red')}]{o.status}[/] {o.error}", highlight=False
            )


def print_statuses(statuses: Sequence[StreamStatus], console: Console) -> None:
    table = Table(title="streams", title_justify="left")
    for header in ("stream", "watermark", "last run", "status", "last success", "rows", "deleted"):
        table.add_column(header, justify="right" if header in ("rows", "deleted") else "left")
    for s in statuses:
        table.add_row(
            s.key,
            _when(s.watermark),
            _when(s.last_run_started),
            f"[{_STYLE.get(s.last_run_status or '', 'white')}]{s.last_run_status or 'never run'}[/]",
            _when(s.last_success),
            str(s.live_rows),
            str(s.deleted_rows),
        )
    console.print(table)
    for s in statuses:
        if s.last_error:
            console.print(f"{s.key}: last error: {s.last_error}", highlight=False)


def exit_code(outcomes: Sequence[StreamOutcome]) -> int:
    """0: all succeeded; 1: a stream failed or was interrupted; 3: all succeeded but some
    records went to quarantine (look at pipeline.quarantine)."""
    if any(o.status in ("failed", "interrupted") for o in outcomes):
        return 1
    if any(o.totals.quarantined for o in outcomes):
        return 3
    return 0
