"""Reading values out of records as APIs send them: a dotted path, an ISO-8601 timestamp.

Paging (which seeks by a record's change time), declarations and the loader all read records
this way; it depends on nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any


def dig(record: Any, path: Sequence[str]) -> Any:
    """The value at a dotted path, or None where any step is missing."""
    value = record
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
        if value is None:
            return None
    return value


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 with a zone (Z or an offset); a timestamp without a zone is ambiguous."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}"[:80]) from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}"[:80])
    return parsed
