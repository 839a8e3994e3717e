"""One HTTP client per source: auth, timeouts, retries with backoff, Retry-After, limits.

Errors are classified here and nowhere else:
- retried: 429, 5xx, connection errors, timeouts, and 2xx bodies that are not the JSON they
  claim to be (truncated, an HTML error page): a malformed page must never look like an empty
  page that ends a stream early;
- refreshed once: 401 when the auth can log in again (session cookies);
- fatal: other 4xx, with the source's own error text in the message.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson
from yarl import URL

from pipeline.errors import (
    AuthenticationFailed,
    BadRequest,
    NotFound,
    RetriesExhausted,
    SourceHttpError,
)
from pipeline.extract.limits import RateLimiter, SourceLimits
from pipeline.logs import get_logger

if TYPE_CHECKING:
    from pipeline.extract.auth import Auth

log = get_logger(__name__)

__all__ = ["HttpClient", "JsonResponse", "RateLimiter", "parse_retry_after"]

T = TypeVar("T")
BodyCheck = Callable[[Any], object]
BodyParser = Callable[[bytes], Any]
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 300.0


@dataclass(frozen=True)
class JsonResponse:
    """A successful response, its body already parsed."""

    status: int
    headers: Mapping[str, str]
    body: Any
    url_path: str


class _Retriable(Exception):
    def __init__(self, status: int | None, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


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


class HttpClient:
    """The only way the pipeline talks to a source.

    Owns one `aiohttp.ClientSession` (use it as an async context manager). Cookies are never
    stored: a session cookie is an auth detail, handled by `auth` and sent explicitly, so it
    cannot leak to another host.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        auth: Auth | None = None,
        max_concurrency: int = 4,
        requests_per_second: float | None = None,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        verify_tls: bool = True,
        default_headers: Mapping[str, str] | None = None,
        limits: SourceLimits | None = None,
    ) -> None:
        """`limits`: the source's cap and rate when other clients of it share them (see
        `pipeline.extract.limits`); else this client's own, from `max_concurrency` and
        `requests_per_second`."""
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_response_bytes = max_response_bytes
        self._limits = limits or SourceLimits(max_concurrency, requests_per_second)
        self.max_concurrency = self._limits.max_concurrency
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(10.0, timeout_seconds)
        )
        self._verify_tls = verify_tls
        # Requests holding a slot, whether or not their caller still waits for them; and of
        # those, the ones not sent yet (waiting for their turn at the rate).
        self._exchanges: set[asyncio.Task[Any]] = set()
        self._unsent: set[asyncio.Task[Any]] = set()
        self._default_headers = {"Accept": "application/json", **(default_headers or {})}
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    async def __aenter__(self) -> HttpClient:
        if not self._verify_tls:
            log.warning("tls_verification_disabled", source=self.source)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.max_concurrency + 2, ssl=None if self._verify_tls else False
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            headers=self._default_headers,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._exchanges:
                # Requests whose callers gave up on them (pages fetched beyond the last) still
                # hold their slots; closing the session now would cut them off while the server
                # works on them. They end within the client's timeout.
                await asyncio.wait(set(self._exchanges))
        finally:
            for exchange in self._exchanges:
                exchange.cancel()  # left only when this wait itself was cancelled
            if self._session is not None:
                await self._session.close()
                self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient used outside its 'async with' block")
        return self._session

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    async def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        expect: BodyCheck | None = None,
    ) -> JsonResponse:
        return await self.request("GET", path, params=params, headers=headers, expect=expect)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        form: Mapping[str, str] | None = None,
        multipart: bool = False,
        expect: BodyCheck | None = None,
        parse: BodyParser = orjson.loads,
    ) -> JsonResponse:
        """Send with retries; return the parsed JSON of a 2xx, or raise a SourceHttpError.

        `form` is sent as a form (urlencoded, or multipart when asked), with the auth's own
        form fields added afresh on every attempt (a signed timestamp must not go stale).
        `expect` checks the parsed body's shape (raising ValueError): a 2xx body that is not
        the documented envelope is retried like any other malformed response. `parse` reads
        a 2xx body (a ValueError: not JSON, retried); `pipeline.extract.rawjson` keeps records raw."""
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            auth_headers = await self.auth.headers(self) if self.auth else {}
            body = data
            if form is not None:
                fields = {**(await self.auth.form_fields(self) if self.auth else {}), **form}
                body = _form_body(fields, multipart)
            try:
                return await self._in_slot(
                    self._exchange,
                    method,
                    path,
                    params,
                    {**auth_headers, **(headers or {})},
                    body,
                    expect,
                    parse,
                )
            except AuthenticationFailed as exc:
                if (
                    exc.status == 401
                    and not refreshed
                    and self.auth
                    and await self.auth.refresh(self, auth_headers)
                ):
                    refreshed = True
                    attempt -= 1
                    continue
                raise
            except _Retriable as exc:
                if attempt > self.max_retries:
                    raise RetriesExhausted(
                        self.source,
                        method,
                        path,
                        exc.status,
                        exc.detail,
                        "The source kept failing; check its status page, or raise max_retries "
                        "/ timeout_seconds for this source",
                        attempts=attempt,
                    ) from None
                wait = self._backoff(attempt, exc.retry_after)
                log.warning(
                    "http_retry",
                    source=self.source,
                    method=method,
                    path=path,
                    status=exc.status,
                    detail=exc.detail,
                    attempt=attempt,
                    wait_s=round(wait, 3),
                )
                await asyncio.sleep(wait)

    async def request_raw(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        allow_redirects: bool = False,
    ) -> tuple[int, Mapping[str, str], bytes, aiohttp.ClientResponse]:
        """One unauthenticated attempt, no retries: for login flows that read cookies."""
        return await self._in_slot(self._raw_exchange, method, path, headers, data, allow_redirects)

    async def _raw_exchange(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        data: Any,
        allow_redirects: bool,
    ) -> tuple[int, Mapping[str, str], bytes, aiohttp.ClientResponse]:
        async with self.session.request(
            method, self.url(path), headers=headers, data=data, allow_redirects=allow_redirects
        ) as resp:
            body = await self._read_body(resp, method, path)
            return resp.status, resp.headers, body, resp

    async def _in_slot(self, send: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """`send(*args)`: one request, in a slot of the source's cap, sent at the source's
        rate; the slot is kept until the request is really over.

        The request runs as a task of its own, shielded from its caller: a caller cancelled
        mid-request (a page fetched ahead beyond the last, a stream that fails or stops) stops
        waiting, but the request goes on to its answer, its error or its timeout, and only then
        frees the slot. Cancelling it instead would close the connection at once while the
        server may still be working on it, and the freed slot would send the server one request
        more than the cap. A request still waiting for its turn at the rate is simply dropped.
        """
        await self._limits.slots.acquire()
        task = asyncio.get_running_loop().create_task(self._when_due(send, args))
        self._exchanges.add(task)
        self._unsent.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task in self._unsent:  # nothing reached the server yet
                task.cancel()
                # Its `finally` frees the slot; this too, should it be cancelled before it ran.
                task.add_done_callback(self._over)
            raise

    async def _when_due(
        self, send: Callable[..., Coroutine[Any, Any, T]], args: tuple[Any, ...]
    ) -> T:
        task = asyncio.current_task()
        assert task is not None
        try:
            rate = self._limits.rate
            if rate.limited:
                # Taken here, right before sending: nothing may run in between to delay this
                # start after the next one's gap was measured from it.
                await rate.wait()
            self._unsent.discard(task)
            self.requests_sent += 1
            return await send(*args)
        finally:
            self._over(task)  # here, not in a done callback: the slot is free a step sooner

    def _over(self, task: asyncio.Task[Any]) -> None:
        """The request's slot is free (once, however often this is called for it)."""
        if task in self._exchanges:
            self._exchanges.discard(task)
            self._unsent.discard(task)
            self._limits.slots.release()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_SECONDS)
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def _exchange(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        data: Any,
        expect: BodyCheck | None,
        parse: BodyParser,
    ) -> JsonResponse:
        try:
            url, query = URL(self.url(path)), params
            for _hop in range(MAX_REDIRECTS + 1):
                async with self.session.request(
                    method, url, params=query, headers=headers, data=data, allow_redirects=False
                ) as resp:
                    target = self._redirect_target(method, path, resp)
                    if target is None:
                        body = await self._read_body(resp, method, path)
                        return self._interpret(method, path, resp, body, expect, parse)
                url, query = target, None
            raise BadRequest(
                self.source,
                method,
                path,
                None,
                f"more than {MAX_REDIRECTS} redirects",
                "Point base_url at the API's final address",
            )
        except TimeoutError:
            raise _Retriable(None, "timed out") from None
        except aiohttp.ClientPayloadError as exc:
            raise _Retriable(None, f"connection broke mid-body ({type(exc).__name__})") from None
        except aiohttp.ClientConnectionError as exc:
            raise _Retriable(None, f"connection error ({type(exc).__name__})") from None

    def _redirect_target(self, method: str, path: str, resp: aiohttp.ClientResponse) -> URL | None:
        """Where a redirect points, if it is one we follow: same scheme, host and port as
        base_url only, so credentials (headers, cookies) never travel to another host."""
        location = resp.headers.get("Location")
        if resp.status not in (301, 302, 303, 307, 308) or not location:
            return None
        target = resp.url.join(URL(location))
        if target.origin() != URL(self.base_url).origin():
            raise BadRequest(
                self.source,
                method,
                path,
                resp.status,
                f"redirected to another host ({target.host}); credentials are not sent there",
                "Point base_url at the API's real host if the move is legitimate",
            )
        if method != "GET" and resp.status in (301, 302, 303):
            raise BadRequest(
                self.source,
                method,
                path,
                resp.status,
                "redirect of a form post",
                "Point base_url at the API's final address",
            )
        return target

    async def _read_body(self, resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self.max_response_bytes:
            raise self._too_large(method, path, resp.status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise self._too_large(method, path, resp.status)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, method: str, path: str, status: int) -> SourceHttpError:
        limit_mb = self.max_response_bytes / (1024 * 1024)
        return BadRequest(
            self.source,
            method,
            path,
            status,
            f"response body larger than {limit_mb:.3g} MB",
            "Lower the stream's page_size or raise max_response_mb for this source",
        )

    def _interpret(
        self,
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
                raise _Retriable(status, f"expected JSON, got {content_type or 'no content type'}")
            if not body.strip():
                raise _Retriable(status, "empty body where JSON was expected")
            try:
                parsed = parse(body)
            except ValueError:  # orjson's JSONDecodeError is one
                raise _Retriable(status, "body is not valid JSON (truncated?)") from None
            if expect is not None:
                try:
                    expect(parsed)
                except ValueError as exc:
                    raise _Retriable(status, f"unexpected body: {exc}") from None
            return JsonResponse(status, resp.headers, parsed, path)
        detail = _error_text(body)
        if status in RETRY_STATUSES:
            raise _Retriable(status, detail, parse_retry_after(resp.headers.get("Retry-After")))
        if status in (401, 403):
            raise AuthenticationFailed(
                self.source,
                method,
                path,
                status,
                detail,
                "Check the source's credentials in pipeline.toml"
                + (" and that they grant access to this endpoint" if status == 403 else ""),
            )
        if status == 404:
            raise NotFound(self.source, method, path, status, detail, "Check the source's base_url")
        raise BadRequest(
            self.source,
            method,
            path,
            status,
            detail,
            "The source rejected the request; check this stream's settings",
        )


def _form_body(fields: Mapping[str, str], multipart: bool) -> Any:
    if not multipart:
        return dict(fields)
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def _error_text(body: bytes, limit: int = 300) -> str:
    """The source's own words, whatever its error shape; short, never the whole body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:limit] + "...") if len(text) > limit else (text or "(empty body)")
    return _summarise_error(parsed)[:limit]


def _summarise_error(parsed: Any) -> str:
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
