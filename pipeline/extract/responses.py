"""What an answer means: a parsed 2xx body, or an error classified once, here.

- retried (`Retriable`): 429, 5xx, 408/425, and 2xx bodies that are not the JSON they claim to
  be (truncated, an HTML error page): a malformed page must never look like an empty page
  that ends a stream early;
- fatal: 401/403 (`AuthenticationFailed`, which the client may refresh once), 404
  (`NotFound`), other 4xx (`BadRequest`), with the source's own error text in the message.

Everything a server sends is input: a header or body that no parser here takes is judged
like any other malformed answer, and whatever of it a message shows is made short, printable
and one line (`shown`) first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from pipeline.errors import AuthenticationFailed, BadRequest, NotFound
from pipeline.text import printable

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
        retry_after_header: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.retry_after_header = retry_after_header  # as sent, for a message about the wait
        if reason is None:
            in_2xx = status is not None and 200 <= status < 300
            reason = "malformed_body" if in_2xx else str(status) if status else "no_answer"
        self.reason = reason


# RFC 9110 delta-seconds is 1*DIGIT (ASCII); a fraction is tolerated. Python's float() also
# takes "inf", "nan", "1e400", "-5", "1_000" and non-ASCII digits, none of which is a wait.
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# Longer than any cap (about 31,700 years): a wait stays a finite number whatever was asked.
FOREVER_SECONDS = 1e12


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds, from either of its two forms (delta-seconds or an HTTP-date).

    None when the header is neither (garbage, a negative number, `inf`): the client then backs
    off as without one. Never raises and never infinite; whether a long wait is waited for is
    the client's decision (`max_retry_after_seconds`)."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), FOREVER_SECONDS)
    if len(value) > 64:  # an HTTP-date is 29 characters
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" (zone unknown); HTTP-dates are always GMT
            when = when.replace(tzinfo=UTC)
        delta = when.timestamp() - (now if now is not None else time.time())
    except (TypeError, ValueError, IndexError, OverflowError):  # e.g. the year 10^20
        return None
    return min(max(0.0, delta), FOREVER_SECONDS)


def shown(text: str, limit: int = 120) -> str:
    """Server text fit for a one-line message and a JSON log line: at most `limit` characters,
    control characters and undecodable bytes (aiohttp keeps a header's non-UTF-8 bytes as
    surrogates, which the log renderer cannot encode) shown as escapes (`pipeline.text`)."""
    escaped = printable(text[:limit])
    return escaped + "..." if len(text) > limit else escaped


def _first_line(exc: BaseException, limit: int = 120) -> str:
    return shown(str(exc).strip().split("\n", 1)[0].rstrip(":"), limit)


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
            got = shown(content_type) or "no content type"
            raise Retriable(status, f"expected JSON, got {got}")
        if not body.strip():
            raise Retriable(status, "empty body where JSON was expected")
        try:
            parsed = parse(body)
        except ValueError as exc:  # orjson's JSONDecodeError is one, as is rawjson's
            raise Retriable(status, f"body is not valid JSON ({_first_line(exc)})") from None
        except RecursionError:  # a parser given as `parse` that recurses in Python
            raise Retriable(status, "body is not valid JSON (nested too deeply)") from None
        if expect is not None:
            try:
                expect(parsed)
            except ValueError as exc:
                raise Retriable(status, f"unexpected body: {_first_line(exc, 300)}") from None
        return JsonResponse(status, resp.headers, parsed, path)
    detail = error_text(body)
    if status in RETRY_STATUSES:
        header = resp.headers.get("Retry-After")
        raise Retriable(status, detail, parse_retry_after(header), retry_after_header=header)
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
        return shown(summarise_error(orjson.loads(body)), limit)
    except (orjson.JSONDecodeError, TypeError, RecursionError):
        # Not JSON, or JSON too deep to summarise (orjson.dumps stops at 254 levels, str()
        # at the recursion limit): its opening text is what a person can use.
        text = body.lstrip()[: limit * 4].decode("utf-8", "replace").strip()
        return shown(text, limit) or "(empty body)"


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
