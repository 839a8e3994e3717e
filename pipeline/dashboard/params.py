"""The dashboard's request parameters, read strictly.

What a page takes from its URL is either a value it can use or a 400 naming the parameter. Left
to Python and Postgres, odd values went wrong in ways a person cannot act on: `'²'.isdigit()` is
true and `int('²')` raises (a 500), a number beyond bigint or a NUL byte makes the database
refuse the query (which read as "the dashboard cannot read the database", a 503), and a `%FF`
quietly became U+FFFD and matched nothing. Use these readers for every parameter a page adds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from aiohttp import web

# A stream key or a quarantine reason is far shorter; a 100 KB value is a mistake or a probe,
# and is refused before it reaches a query.
MAX_TEXT = 2048
BIGINT_MAX = 2**63 - 1  # the id columns are bigint
SHOWN = 40  # characters of a refused value quoted back

_DIGITS = re.compile(
    r"[0-9]{1,19}"
)  # ASCII only: str.isdigit() also takes '²' and Arabic-Indic digits
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN else value[:SHOWN] + "…")


@web.middleware
async def well_formed_url(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a path or query that is not percent-encoded UTF-8 (`%zz`, `%FF`, `%ED%A0%80`):
    decoded leniently, it would become other text than was sent."""
    raw = request.raw_path
    if _BAD_PERCENT.search(raw):
        raise _bad("the URL has a % not followed by two hex digits: encode a % as %25")
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the URL is not UTF-8 once its %-escapes are decoded") from None
    return await handler(request)


def record_id(request: web.Request, name: str) -> int | None:
    """A query parameter naming a row id (`before=`): ASCII digits within bigint, or absent."""
    value = request.query.get(name, "")
    if not value:
        return None
    if not _DIGITS.fullmatch(value) or int(value) > BIGINT_MAX:
        shown = f"{len(value):,} characters" if len(value) > SHOWN else _shown(value)
        raise _bad(
            f"{name}={shown}: give a record id (a whole number from 0 to {BIGINT_MAX}, "
            "in the digits 0-9)"
        )
    return int(value)


def _printable(name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise _bad(f"{name}: {len(value):,} characters; at most {MAX_TEXT:,} are taken")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise _bad(
            f"{name}={_shown(value)}: contains a control character (a NUL, newline, "
            "escape, ...); no stream key or reason has one"
        )
    return value


def query_text(request: web.Request, name: str) -> str | None:
    """A query parameter that is printable text of at most MAX_TEXT characters (a stream
    key, a reason); None when absent or empty."""
    return _printable(name, request.query.get(name, "")) or None


def path_text(request: web.Request, name: str) -> str:
    """A part of the route (`/streams/{key}`), held to the rules of `query_text`."""
    return _printable(name, request.match_info[name])
