"""Finding 7: a source's error body with ESC / OSC sequences was printed raw by the sync summary
and `pipeline status` (a window retitled, lines erased, a forged "all streams succeeded").
Everything from a source is escaped before it is stored or printed: errors, quarantine
reasons and record keys, log lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import HttpError, RunningSimulator
from pipeline.text import is_printable, printable
from tests.helpers import rows, run_cli
from tests.redteam.cli import soho_config

# OSC retitles the window, CSI 2K erases the line, CR returns to its start, then a forged line
# in green; a C1 CSI (U+009B) and a right-to-left override for good measure.
HOSTILE = (
    "\x1b]0;pwned\x07\x1b[2K\r\x1b[32mall streams succeeded\x1b[0m\n"
    "\x9b31m\u202egnissim\u2066 [bold]markup[/bold]"
)
CONTROLS = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2066")


def _raw_controls(text: str) -> list[str]:
    return [c for c in CONTROLS if c in text]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"message": HOSTILE, "code": 403}),  # the source's words, decoded
        HOSTILE,  # not JSON: the text as sent
    ],
    ids=["json message", "plain text"],
)
async def test_a_hostile_error_body_and_record_are_shown_escaped_everywhere(
    body: str,
    engine: AsyncEngine,
    on_test_database: str,
    soho: RunningSimulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = soho_config(tmp_path, soho, max_retries=0)
    store = soho.sim._customers  # type: ignore[attr-defined]
    store[soho.sim.ids[3]]["updated_at"] = HOSTILE  # type: ignore[attr-defined]
    assert await run_cli("--config", str(config), "sync") == 3  # one record quarantined
    capsys.readouterr()

    soho.sim.faults.add(HttpError(403, body=body), times=None)
    code = await run_cli("--config", str(config), "--log-format", "console", "sync")
    printed = capsys.readouterr()
    assert code == 1
    assert not _raw_controls(printed.out) and not _raw_controls(printed.err)
    assert "\\x1b]0;pwned" in printed.out and "[bold]markup[/bold]" in printed.out

    assert await run_cli("--config", str(config), "status") == 1
    status_out = capsys.readouterr().out
    assert not _raw_controls(status_out) and "\\x1b[2K" in status_out

    [failed] = await rows(engine, "SELECT error FROM pipeline.sync_runs WHERE status = 'failed'")
    assert not _raw_controls(failed.error) and "\\x1b[32mall streams succeeded" in failed.error
    [quarantined] = await rows(engine, "SELECT reason, raw FROM pipeline.quarantine")
    assert not _raw_controls(quarantined.reason)
    assert "\\u001b]0;pwned" in quarantined.raw  # the record itself is kept as it came


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_printable_text_has_no_control_left_and_changes_nothing_printable(text: str) -> None:
    shown = printable(text)
    assert is_printable(shown)
    assert all(ch.isprintable() or ch == " " for ch in shown if ch.isascii())
    if is_printable(text):
        assert shown == text
