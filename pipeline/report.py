"""Human-readable summaries for the terminal (rich tables); machines read `sync_runs` instead."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.logs import get_logger
from pipeline.run import StreamOutcome
from pipeline.status import StreamStatus
from pipeline.text import printable

log = get_logger(__name__)

_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "interrupted": "yellow",
    "held": "yellow",
}


def shown(text: str) -> str:
    """Text from elsewhere (a source's error body, a stored error) as the terminal gets it:
    control sequences escaped (`pipeline.text`), rich markup taken literally."""
    return escape(printable(text))


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
            shown(o.key),
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
                f"[{_STYLE.get(o.status, 'red')}]{o.status}[/] {shown(o.error)}",
                highlight=False,
                soft_wrap=True,  # one line per error, whole: grep finds it, a log keeps it
            )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def print_statuses(statuses: Sequence[StreamStatus], console: Console) -> None:
    table = Table(title="streams", title_justify="left")
    headers = (
        "stream",
        "schedule",
        "watermark",
        "last run",
        "status",
        "last success",
        "age",
        "rows",
        "deleted",
    )
    queued = any(s.jobs is not None for s in statuses)
    if queued:
        headers = (*headers, "jobs")
    for header in headers:
        table.add_column(
            header, justify="right" if header in ("rows", "deleted", "age") else "left"
        )
    for s in statuses:
        status = s.last_run_status or "never run"
        age = _age(s.age_seconds) if s.configured else "-"
        cells = [
            shown(s.key),
            s.schedule if s.enabled else ("disabled" if s.configured else "not configured"),
            _when(s.watermark),
            _when(s.last_run_started),
            f"[{_STYLE.get(s.last_run_status or '', 'white')}]{status}[/]",
            _when(s.last_success),
            f"[red]{age} STALE[/]" if s.stale else age,
            str(s.live_rows),
            str(s.deleted_rows),
        ]
        if queued:
            jobs = str(s.jobs or "-")
            cells.append(f"[red]{jobs}[/]" if s.jobs and s.jobs.failed else jobs)
        table.add_row(*cells)
    console.print(table)
    for s in statuses:
        if s.last_error:
            console.print(
                f"{shown(s.key)}: last error: {shown(s.last_error)}",
                highlight=False,
                soft_wrap=True,
            )


class ProgressDisplay:
    """Backfill and rederive progress: a live bar on a terminal, a log line (`event`) every few
    seconds otherwise. `written` counts the rows a batch wrote (inserted or rewritten)."""

    def __init__(
        self,
        console: Console,
        label: str,
        every_seconds: float = 5.0,
        event: str = "backfill_progress",
    ) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.label = label
        self.every_seconds = every_seconds
        self.event = event
        self.pages = 0
        self.records = 0
        self.written = 0
        self._started = 0.0
        self._last_log = 0.0
        self._bar = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn(
                    "{task.fields[pages]} pages, {task.completed:.0f} records, "
                    "{task.fields[written]} written, {task.fields[rate]}/s"
                ),
                TimeElapsedColumn(),
                console=console,
            )
            if console.is_terminal
            else None
        )
        self._task: Any = None

    def __enter__(self) -> ProgressDisplay:
        import time

        self._started = self._last_log = time.monotonic()
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, pages=0, written=0, rate="0")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, key: str, page: Any, result: Any) -> None:
        import time

        self.pages += 1
        self.records += result.read
        self.written += result.inserted + result.updated
        now = time.monotonic()
        rate = f"{self.records / max(now - self._started, 1e-6):,.0f}"
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=self.records,
                pages=self.pages,
                written=self.written,
                rate=rate,
            )
        elif now - self._last_log >= self.every_seconds:
            self._last_log = now
            log.info(
                self.event,
                stream=key,
                pages=self.pages,
                records=self.records,
                written=self.written,
                rate_per_s=rate,
            )
