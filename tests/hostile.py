"""Hostile data for property tests: the strings, numbers and shapes real sources send and
friendly generated data never does, and JSON encoded the many ways an API may encode it.

Use `text()` for any string a record holds, `json_bytes(value, rnd)` to put a value on the
wire as some server would (escapes chosen at random: `\\/`, `\\u00e9`, surrogate pairs, spaces),
and `records()` for whole records of a declared stream."""

from __future__ import annotations

import functools
import random
from typing import Any

import orjson
from hypothesis import strategies as st

# Pieces that broke or could break a fast path: backslash runs before `u0000`, a real NUL,
# quotes, a slash, line and paragraph separators, an RTL override, combining marks, emoji
# (outside the BMP: a surrogate pair when escaped), a BOM.
AWKWARD_PIECES = [
    "\\",
    "\\\\",
    "\\u0000",
    "\\\\u0000",
    "\\\\\\u0000",
    "u0000",
    "\x00",
    '"',
    '\\"',
    "/",
    "\\/",
    "\n",
    "\r\n",
    "\t",
    "\u2028",
    "\u2029",
    "\u202e",
    "שלום עולם",
    "e\u0301",
    "😀",
    "👩‍👩‍👧",
    "\ufeff",
    "\x7f",
    "\x1f",
    "",
    " ",
]

HUGE = 100_000


# Each strategy is built once per set of arguments and reused: hypothesis spends far longer
# building a strategy than drawing from it, and the oracles draw thousands of values.
@functools.cache
def text(
    *, allow_nul: bool = True, max_pieces: int = 6, huge: bool = True
) -> st.SearchStrategy[str]:
    """Strings mixing awkward pieces with arbitrary unicode; with `huge`, now and then 100 KB."""
    pieces = st.sampled_from([p for p in AWKWARD_PIECES if allow_nul or "\x00" not in p]) | st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters=set() if allow_nul else {"\x00"}),
        max_size=8,
    )
    mixed = st.lists(pieces, max_size=max_pieces).map("".join)
    huge_text = st.sampled_from(["x", "é", "😀", "\\"]).map(lambda c: c * (HUGE // len(c.encode())))
    return st.one_of(mixed, mixed, mixed, mixed, mixed, mixed, mixed, huge_text) if huge else mixed


@functools.cache
def integers() -> st.SearchStrategy[int]:
    """Big and negative integers, around bigint's edges and past them."""
    edges = [0, -1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 10**30, -(10**30)]
    return st.sampled_from(edges) | st.integers(min_value=-(2**64), max_value=2**64)


@functools.cache
def scalars(*, allow_nul: bool = True, huge: bool = False) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        text(allow_nul=allow_nul, max_pieces=4, huge=huge),
    )


@functools.cache
def json_values(*, allow_nul: bool = True, huge: bool = False) -> st.SearchStrategy[Any]:
    """Any JSON value, nested empty objects and arrays included; `huge`: 100 KB strings too."""
    keys = text(allow_nul=allow_nul, max_pieces=2, huge=False)
    return st.recursive(
        scalars(allow_nul=allow_nul, huge=huge) | st.just({}) | st.just([]),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=12,
    )


# ---- encoding as some server would -------------------------------------------------------------

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_char(char: str, rnd: random.Random) -> str:
    code = ord(char)
    must = code < 0x20 or char in '"\\'
    if not must and rnd.random() < 0.85:
        return "\\/" if char == "/" and rnd.random() < 0.3 else char
    if char in _SHORT_ESCAPES and rnd.random() < 0.7:
        return _SHORT_ESCAPES[char]
    if code > 0xFFFF:  # a surrogate pair
        code -= 0x10000
        high, low = 0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)
        return _u(high, rnd) + _u(low, rnd)
    return _u(code, rnd)


def _u(code: int, rnd: random.Random) -> str:
    digits = f"{code:04x}"
    return "\\u" + (digits.upper() if rnd.random() < 0.5 else digits)


HOSTILE_EDGE = 300  # characters at each end of a huge string encoded one by one


def _string(value: str, rnd: random.Random) -> str:
    if len(value) > 1000 and rnd.random() < 0.5:  # huge: as a serialiser would, quickly
        return orjson.dumps(value).decode()
    if len(value) > 2 * HOSTILE_EDGE:
        # Escapes are local, so a string may be encoded in pieces: its ends one character at a
        # time, its middle as a serialiser would (encoding 100 KB char by char cost the oracle
        # tests most of their time, and found nothing the ends do not).
        head, tail = value[:HOSTILE_EDGE], value[-HOSTILE_EDGE:]
        middle = orjson.dumps(value[HOSTILE_EDGE:-HOSTILE_EDGE]).decode()[1:-1]
        return '"' + _chars(head, rnd) + middle + _chars(tail, rnd) + '"'
    return '"' + _chars(value, rnd) + '"'


def _chars(value: str, rnd: random.Random) -> str:
    return "".join(_escape_char(c, rnd) for c in value)


def _space(rnd: random.Random) -> str:
    return rnd.choice(["", "", "", " ", "\n  "])


def json_text(value: Any, rnd: random.Random) -> str:
    """`value` as JSON text, encoded one of the many valid ways."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if rnd.random() < 0.5 else f"{value!r}".replace("e+", "E+")
    if isinstance(value, str):
        return _string(value, rnd)
    if isinstance(value, list):
        inner = ("," + _space(rnd)).join(json_text(v, rnd) for v in value)
        return "[" + _space(rnd) + inner + "]"
    if isinstance(value, dict):
        inner = ("," + _space(rnd)).join(
            _string(k, rnd) + _space(rnd) + ":" + _space(rnd) + json_text(v, rnd)
            for k, v in value.items()
        )
        return "{" + _space(rnd) + inner + _space(rnd) + "}"
    raise TypeError(type(value).__name__)


def json_bytes(value: Any, rnd: random.Random) -> bytes:
    return json_text(value, rnd).encode()


def holds_nul(value: Any) -> bool:
    """The plain answer: any decoded string or key holding U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    return False
