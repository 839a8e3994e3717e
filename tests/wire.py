"""A server of lists given as bytes, in the documented response shapes of each source.

The simulators in `pipeline.sandbox` generate their own data and serialise it one way. The
oracle tests need the opposite: records a test generated (hostile ones, ones that are not JSON
at all), put on the wire exactly as given, so that what the engine stores can be compared with
what a plain reading of those same bytes gives. This server pages such lists the way each API
documents (SOURCES.md): Afosto's `x-page` headers with a bare array, Soho's and Sparkfly's
numbered pages in an envelope, DigiLocker's single answers to a form post. It knows nothing of
how the client pages, and answers 404 to anything else (a detail request included: the
records it serves are the whole truth, so one not in a list is gone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import orjson
from aiohttp import web

from pipeline.sandbox.core import Simulator

JSON = "application/json"


def _array(records: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(records) + b"]"


def _int(text: str | None, default: int) -> int:
    try:
        return max(int(text or default), 1)
    except ValueError:
        return default


class WireSimulator(Simulator):
    """`lists[(path, form_key)]` is a list of record bytes; `style[path]` how it is served:
    `header` (Afosto), `soho`, `sparkfly` or `single:<field>` (DigiLocker)."""

    name = "wire"

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.lists: dict[tuple[str, str | None], list[bytes]] = {}
        self.style: dict[str, str] = {}

    def serve_list(
        self, path: str, style: str, records: Sequence[bytes], form_key: str | None = None
    ) -> None:
        self.style[path] = style
        self.lists[(path, form_key)] = list(records)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self._list)

    async def _list(self, request: web.Request) -> web.Response:
        style = self.style.get(request.path)
        form_key = None
        if style is not None and style.startswith("single:"):
            form_key = (await request.post()).get("orgid")
        records = self.lists.get((request.path, None if form_key is None else str(form_key)))
        if style is None or records is None:
            return self.error_response(404, "not found")
        if style == "header":
            page = _int(request.headers.get("x-page"), 1)
            size = _int(request.headers.get("x-page-size"), 100)
            chunk = records[(page - 1) * size : page * size]
            headers = {"x-page": str(page), "x-count": str(len(records)), "Content-Type": JSON}
            return web.Response(body=_array(chunk), headers=headers)
        if style in ("soho", "sparkfly"):
            size_param = "per" if style == "soho" else "per_page"
            page = _int(request.query.get("page"), 1)
            size = min(_int(request.query.get(size_param), 25), 25 if style == "soho" else 100)
            chunk = records[(page - 1) * size : page * size]
            total = math.ceil(len(records) / size)
            envelope = (
                {
                    "current_page": page,
                    "next_page": page + 1 if page < total else None,
                    "total_pages": total,
                }
                if style == "soho"
                else {
                    "page": page,
                    "per_page": size,
                    "total_entries": len(records),
                    "total_pages": total,
                }
            )
            field = b'"records"' if style == "soho" else b'"credentials"'
            head = orjson.dumps(envelope)[:-1]
            return web.Response(
                body=head + b"," + field + b":" + _array(chunk) + b"}", content_type=JSON
            )
        field = style.split(":", 1)[1].encode()
        body = b'{"' + field + b'":' + _array(records) + b"}"
        return web.Response(body=body, content_type=JSON)
