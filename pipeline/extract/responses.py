"""What an answer means: a parsed 2xx body, or an error classified once, here.

- retried (`Retriable`): 429, 5xx, 408/425, and 2xx bodies that are not the JSON they claim to
  be (truncated, an HTML error page): a malformed page must never look like an empty page
  that ends a stream early;
- fatal: 401/403 (`AuthenticationFailed`, which the client may refresh once), 404
  (`NotFound`), other 4xx (`BadRequest`), with the source's own error text in the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from pipeline.errors import AuthenticationFailed, BadRequest, NotFound

BodyCheck = Callable[[Any], object]
BodyParser = Callable[[bytes], Any]
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class JsonResponse:
    """A successful response, its body already parsed."""

    status: int
    headers: Mapping[str, str]
    body: Any
    url_path: str


class Retriable(Exception):
    """A failed attempt worth another: the client backs off (or waits `retry_after`).
    `reason`, for the retry counter: the HTTP status, 'malformed_body' for a 2xx that is not
    the JSON expected, or what the raiser says when no answer came ('timeout', 'connection')."""

    def __init__(
        self,
        status: int | None,
        detail: str,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        if reason is None:
            in_2xx = status is not None and 200 <= status < 300
            reason = "malformed_body" if in_2xx else str(status) if status else "no_answer"
        self.reason = reason


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds, from either of its two forms (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def interpret(
    source: str,
    method: str,
    path: str,
    resp: aiohttp.ClientResponse,
    body: bytes,
    expect: BodyCheck | None,
    parse: BodyParser,
) -> JsonResponse:
    status = resp.status
    if 200 <= status < 300:
        content_type = resp.headers.get("Content-Type", "")
        if "json" not in content_type.lower():
            raise Retriable(status, f"expected JSON, got {content_type or 'no content type'}")
        if not body.strip():
            raise Retriable(status, "empty body where JSON was expected")
        try:
            parsed = parse(body)
        except ValueError:  # orjson's JSONDecodeError is one
            raise Retriable(status, "body is not valid JSON (truncated?)") from None
        if expect is not None:
            try:
                expect(parsed)
            except ValueError as exc:
                raise Retriable(status, f"unexpected body: {exc}") from None
        return JsonResponse(status, resp.headers, parsed, path)
    detail = error_text(body)
    if status in RETRY_STATUSES:
        raise Retriable(status, detail, parse_retry_after(resp.headers.get("Retry-After")))
    if status in (401, 403):
        raise AuthenticationFailed(
            source,
            method,
            path,
            status,
            detail,
            "Check the source's credentials in pipeline.toml"
            + (" and that they grant access to this endpoint" if status == 403 else ""),
        )
    if status == 404:
        raise NotFound(source, method, path, status, detail, "Check the source's base_url")
    raise BadRequest(
        source,
        method,
        path,
        status,
        detail,
        "The source rejected the request; check this stream's settings",
    )


def error_text(body: bytes, limit: int = 300) -> str:
    """The source's own words, whatever its error shape; short, never the whole body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:limit] + "...") if len(text) > limit else (text or "(empty body)")
    return summarise_error(parsed)[:limit]


def summarise_error(parsed: Any) -> str:
    if isinstance(parsed, str):
        return parsed
    if isinstance(parsed, dict):
        for text_key, code_key in (("error_description", "error"), ("message", "code")):
            if text_key in parsed:
                code = parsed.get(code_key)
                return f"{code}: {parsed[text_key]}" if code else str(parsed[text_key])
        errors = parsed.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            return f"{first.get('error', '')}: {first.get('message', '')}".strip(": ")
    return orjson.dumps(parsed).decode()
