"""The paging fields of an answer, read strictly: a count, a page number or a next-page marker
that is there but is not what the API documents is the source's error, named.

A field left out (or null) is None, and the walk ends by its other signal (an empty page, a
null `next_page`). A field holding "lots", -5, 2.5, true, 1e+30 or "²" was once taken for a
missing one: a walk that trusted it ended after page 1 and called the scan complete, or
`int()` crashed on a digit it did not know ("internal error").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.errors import PaginationError

NOT_AS_DOCUMENTED = "the API does not page as documented (check the source)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def at(body: Any, path: Sequence[str], number: int) -> Any:
    """The value at `path` in a body, None where a step is missing; a step that is there but
    is not an object (`"paging": "lots"`) is an error, not a missing field."""
    value = body
    for depth, step in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, dict):
            where = ".".join(path[:depth]) or "the body"
            raise PaginationError(
                f"{where} is {_shown(value)} on page {number}, not an object with "
                f"{'.'.join(path[depth:])}; {NOT_AS_DOCUMENTED}"
            )
        value = value.get(step)
    return value


def count(value: Any, name: str, number: int) -> int | None:
    """A whole number >= 0 (a JSON integer, or the decimal digits of a header), None when
    absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit():  # "²".isdigit() too, but int() refuses it
            return int(digits)
    raise PaginationError(
        f"{name} is {_shown(value)} on page {number}, not a whole number >= 0; {NOT_AS_DOCUMENTED}"
    )


def count_at(body: Any, path: Sequence[str], number: int) -> int | None:
    """The count at `path` in a body (a total of pages or records, a page number)."""
    return count(at(body, path, number), ".".join(path), number)


def next_page_at(body: Any, path: Sequence[str], number: int) -> bool:
    """Whether the next-page field at `path` says another page follows page `number`: null
    for none, else the number of the page after it, which is the one the walk asks for next."""
    value = at(body, path, number)
    if value is None:
        return False
    expected = number + 1
    if (type(value) is int and value == expected) or (
        isinstance(value, str) and value.strip() == str(expected)
    ):
        return True
    raise PaginationError(
        f"{'.'.join(path)} is {_shown(value)} on page {number}, neither null nor the next page's "
        f"number ({number + 1}); {NOT_AS_DOCUMENTED}"
    )
