"""The `pipeline` command's exit codes, once: what cron, CI and monitoring branch on.

A command that runs streams exits with the worst thing that happened to any of them, in this
order: a stream failed or was interrupted (1), a stream did not run because another session held
its lock (4), a stream held back deletions above its `max_delete_fraction` (5), records went to
quarantine (3), all well (0). Usage, configuration and database refusals are 2 (nothing ran);
a stop by SIGTERM / Ctrl-C is 130.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.run.stream_run import StreamOutcome

OK = 0
FAILED = 1
USAGE = 2
QUARANTINED = 3
SKIPPED = 4
HELD = 5
INTERRUPTED = 130


def for_outcomes(outcomes: Sequence[StreamOutcome]) -> int:
    """The exit code of a command whose streams ended as `outcomes` (see the module)."""
    statuses = {o.status for o in outcomes}
    if statuses & {"failed", "interrupted"}:
        return FAILED
    if "skipped" in statuses:
        return SKIPPED
    if "held" in statuses:
        return HELD
    if any(o.totals.quarantined for o in outcomes):
        return QUARANTINED
    return OK


__all__ = [
    "FAILED",
    "HELD",
    "INTERRUPTED",
    "OK",
    "QUARANTINED",
    "SKIPPED",
    "USAGE",
    "for_outcomes",
]
