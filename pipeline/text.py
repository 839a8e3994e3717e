"""Text from elsewhere made safe to store and to print.

A source's error body, a quarantined value or a lock holder's application name can carry
terminal control sequences: ESC/CSI that erase lines or move the cursor, OSC that retitles the
window, a carriage return or newline that starts a forged line ("all streams succeeded"), bidi
overrides that reorder what is shown. Every such character becomes a visible escape (`\\x1b`,
`\\u202e`), so what a person reads is what was sent, and nothing it sent acts on their terminal.
Printable text (any script, emoji) passes unchanged.
"""

from __future__ import annotations

import re

# C0 controls (newline and tab included: a message is one line), DEL, C1 controls, the format
# characters that reorder or hide text (bidi embeddings, overrides and isolates, the line and
# paragraph separators, zero-width marks, the BOM), and lone surrogates (undecodable bytes kept
# by a decoder, which no UTF-8 writer can encode: a log line would fail on them).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control or reordering character shown as an escape (see the module)."""
    return _UNSAFE.sub(_escape, text)


def is_printable(text: str) -> bool:
    return _UNSAFE.search(text) is None


__all__ = ["is_printable", "printable"]
