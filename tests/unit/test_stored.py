"""The in-memory stored hashes a full scan judges records by (`pipeline.load.stored`)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import xxhash

from pipeline.load.stored import _PACKED, StoredHashes

MICROS_2000 = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


def digest(n: int) -> bytes:
    return xxhash.xxh3_128_digest(str(n).encode())


def stored(*rows: tuple[int, datetime | None, bool]) -> StoredHashes:
    """Rows as Postgres sends them: hash, cursor (microseconds since 2000), stale flag."""
    packed = b""
    for n, cursor, stale in rows:
        micros = (
            int(cursor.timestamp() * 1_000_000) - MICROS_2000 if cursor else np.iinfo(np.int64).min
        )
        packed += digest(n) + micros.to_bytes(8, "big", signed=True) + bytes([stale])
    return StoredHashes(np.frombuffer(packed, dtype=_PACKED))


def at(day: int) -> datetime:
    return datetime(2024, 5, day, tzinfo=UTC)


def test_stored_records_are_unchanged_and_seen_the_rest_are_to_write() -> None:
    hashes = stored(*((n, at(1 + n % 20), False) for n in range(100)))

    todo, latest = hashes.judge([digest(5), digest(1000), digest(17), digest(2000)])

    assert todo == [1, 3]  # the positions of the records not stored as they are
    assert latest == at(18)  # the latest cursor among the unchanged (17 % 20 + 1)
    assert len(hashes.unseen()) == 98
    assert digest(5) not in hashes.unseen() and digest(6) in hashes.unseen()


def test_a_row_missing_from_the_last_scan_is_seen_but_must_be_written() -> None:
    hashes = stored((1, at(1), True), (2, at(2), False))

    todo, latest = hashes.judge([digest(1), digest(2)])

    assert (todo, latest) == ([0], at(2))
    assert hashes.unseen() == []


def test_rows_met_under_changed_content_are_marked_seen() -> None:
    hashes = stored((1, None, False), (2, None, False))
    hashes.mark_seen([digest(2), digest(99)])
    assert hashes.unseen() == [digest(1)]


def test_no_cursor_an_empty_page_and_an_empty_table() -> None:
    assert stored((1, None, False)).judge([digest(1)]) == ([], None)
    assert stored((1, at(1), False)).judge([]) == ([], None)
    empty = stored()
    assert empty.judge([digest(1), digest(2)]) == ([0, 1], None)
    assert empty.unseen() == [] and len(empty) == 0
    empty.mark_seen([digest(1)])
