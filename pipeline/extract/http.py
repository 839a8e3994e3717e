"""One HTTP client per source: auth, timeouts, retries with backoff, Retry-After, limits.

What an answer means is decided in `pipeline.extract.responses` (retried, refreshed, fatal);
this module sends, retries what that says is retriable (connection errors and timeouts too),
refreshes a credential once after a 401, and keeps each request inside its source's slots.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from yarl import URL

from pipeline import metrics
from pipeline.errors import (
    AuthenticationFailed,
    BadRequest,
    RetriesExhausted,
    RetryAfterTooLong,
    SourceHttpError,
)
from pipeline.extract.limits import RateLimiter, SourceLimits
from pipeline.extract.responses import (
    BodyCheck,
    BodyParser,
    JsonResponse,
    Retriable,
    interpret,
    parse_retry_after,
    shown,
)
from pipeline.logs import get_logger

if TYPE_CHECKING:
    from pipeline.extract.auth import Auth

log = get_logger(__name__)

__all__ = ["HttpClient", "JsonResponse", "RateLimiter", "parse_retry_after"]

T = TypeVar("T")
MAX_REDIRECTS = 5


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
        max_retry_after_seconds: float = 300.0,
        verify_tls: bool = True,
        default_headers: Mapping[str, str] | None = None,
        limits: SourceLimits | None = None,
    ) -> None:
        """`limits`: the source's cap and rate when other clients of it share them (see
        `pipeline.extract.limits`); else this client's own, from `max_concurrency` and
        `requests_per_second`. `max_retry_after_seconds`: the longest `Retry-After` waited
        for; a longer one fails the request at once (`RetryAfterTooLong`)."""
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_response_bytes = max_response_bytes
        self.max_retry_after_seconds = max_retry_after_seconds
        self.timeout_seconds = timeout_seconds
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
            except Retriable as exc:
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
                if exc.retry_after is not None and exc.retry_after > self.max_retry_after_seconds:
                    raise self._asked_too_long(method, path, exc, attempt) from None
                wait = self._backoff(attempt, exc.retry_after)
                metrics.http_retry(self.source, exc.reason)
                log.warning(
                    "http_retry",
                    source=self.source,
                    method=method,
                    path=path,
                    status=exc.status,
                    detail=exc.detail,
                    attempt=attempt,
                    wait_s=round(wait, 3),
                    retry_after_s=None if exc.retry_after is None else round(exc.retry_after, 3),
                )
                await asyncio.sleep(wait)

    def _asked_too_long(
        self, method: str, path: str, exc: Retriable, attempt: int
    ) -> RetryAfterTooLong:
        """The source asked for a longer pause than this run waits: say so now rather than
        sleep for hours (or years: `Retry-After: 999999999`) looking hung."""
        assert exc.retry_after is not None
        header = shown(exc.retry_after_header or "", 60)
        return RetryAfterTooLong(
            self.source,
            method,
            path,
            exc.status,
            f"{self.source} asked to wait {_duration(exc.retry_after)} (Retry-After: {header}), "
            f"longer than max_retry_after_seconds = {self.max_retry_after_seconds:g}",
            "Run it again after that time, or raise max_retry_after_seconds for this source "
            "(at most 86400) to have the run wait",
            attempts=attempt,
        )

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
        answered = False
        try:
            async with self.session.request(
                method, self.url(path), headers=headers, data=data, allow_redirects=allow_redirects
            ) as resp:
                answered = True
                metrics.http_response(self.source, resp.status)
                body = await self._read_body(resp, method, path)
                return resp.status, resp.headers, body, resp
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Raw, these reached the runner as an internal error, or (a refused connection is
            # an OSError) as a lost database. A login is one attempt: it fails, classified.
            self._unanswered(answered)
            raise self._no_answer(method, path, exc) from None

    def _no_answer(self, method: str, path: str, exc: BaseException) -> SourceHttpError:
        if isinstance(exc, TimeoutError):
            detail = f"timed out after {self.timeout_seconds:g} s"
        elif isinstance(exc, aiohttp.ClientResponseError):
            detail = f"the answer is not valid HTTP ({_first_line(exc.message)})"
        else:
            detail = f"connection error ({type(exc).__name__})"
        return RetriesExhausted(  # a login's budget is its one attempt
            self.source,
            method,
            urlsplit(path).path or path,
            None,
            detail,
            "Check that the source is up and that base_url points at it; this request is not "
            "retried, so run again once it answers",
        )

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
            else:  # it goes on to its answer, which nobody reads: nor should asyncio log it
                task.add_done_callback(_unread)
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
        if retry_after is not None:  # at most max_retry_after_seconds: checked by the caller
            return retry_after
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
        answered = False  # this hop's answer is counted; else its failure is
        try:
            url, query = URL(self.url(path)), params
            for _hop in range(MAX_REDIRECTS + 1):
                answered = False
                async with self.session.request(
                    method, url, params=query, headers=headers, data=data, allow_redirects=False
                ) as resp:
                    answered = True
                    metrics.http_response(self.source, resp.status)
                    target = self._redirect_target(method, path, resp)
                    if target is None:
                        body = await self._read_body(resp, method, path)
                        return interpret(self.source, method, path, resp, body, expect, parse)
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
            self._unanswered(answered)
            raise Retriable(None, "timed out", reason="timeout") from None
        except aiohttp.ClientPayloadError as exc:
            self._unanswered(answered)
            detail = f"connection broke mid-body ({type(exc).__name__})"
            raise Retriable(None, detail, reason="connection") from None
        except aiohttp.ClientConnectionError as exc:
            self._unanswered(answered)
            detail = f"connection error ({type(exc).__name__})"
            raise Retriable(None, detail, reason="connection") from None
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser refused the answer (a Content-Length that is not a number, a
            # bad status line, a header line over 8 KB): a broken server or proxy, retried as
            # a malformed body is. Its message spans lines; the first says what was wrong.
            self._unanswered(answered)
            detail = f"the answer is not valid HTTP ({_first_line(exc.message)})"
            # Counted as malformed_body: the metric's documented reasons (README, Metrics).
            raise Retriable(None, detail, reason="malformed_body") from None

    def _unanswered(self, answered: bool) -> None:
        """A request that got no answer is counted as such (one whose body broke off was
        counted by its status)."""
        if not answered:
            metrics.http_response(self.source, None)

    def _redirect_target(self, method: str, path: str, resp: aiohttp.ClientResponse) -> URL | None:
        """Where a redirect points, if it is one we follow: same scheme, host and port as
        base_url only, so credentials (headers, cookies) never travel to another host."""
        location = resp.headers.get("Location")
        if resp.status not in (301, 302, 303, 307, 308) or not location:
            return None
        try:
            target = resp.url.join(URL(location))
        except ValueError:  # yarl refuses it: e.g. "http://[::1/x", a backslash in the host
            raise BadRequest(
                self.source,
                method,
                path,
                resp.status,
                f"redirected to a Location that is not a URL ({shown(location, 80)})",
                "The source (or a proxy before it) is misbehaving; check base_url",
            ) from None
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


def _first_line(message: str) -> str:
    """aiohttp's parser errors span lines (the offending bytes, a caret); the first says what."""
    return shown(message.strip().split("\n", 1)[0].rstrip(":"))


def _unread(task: asyncio.Task[Any]) -> None:
    """Retrieve an abandoned request's outcome (a 429 or a timeout nobody waits for), which
    asyncio would otherwise log as "Task exception was never retrieved"."""
    if not task.cancelled():
        task.exception()


def _duration(seconds: float) -> str:
    """`999,999,999 s (about 31.7 years)`: a wait as a person reads it."""
    text = f"{seconds:,.0f} s" if seconds >= 100 else f"{seconds:g} s"
    for unit, size in (("years", 365 * 86_400), ("days", 86_400), ("hours", 3_600)):
        if seconds >= 2 * size:
            return f"{text} (about {seconds / size:,.1f} {unit})"
    return text


def _form_body(fields: Mapping[str, str], multipart: bool) -> Any:
    if not multipart:
        return dict(fields)
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    return form
