"""Shared machinery of the source simulators: serving, request log, hooks, latency and faults.

A simulator plays one documented SaaS API on loopback so the demo, the integration tests and
the benchmarks exercise real HTTP. Subclasses implement the API (routes, auth, paging, error
bodies); this module adds what every test needs around it:

- a request log (`sim.requests`) to assert what a client sent and how often;
- hooks (`sim.on_request`) that run before the handler, so a test can change the data between
  two page requests exactly as a live system would;
- latency, an optional server-side rate limit, and scheduled faults (`sim.faults`);
- a load meter (`sim.load`): API requests in flight at once and per second, at their peaks;
- control routes under `/_sandbox/` for users of `pipeline sandbox` and subprocess tests;
- what lets several accounts of one API share a server (`accounts.py`): `as_account` gives a
  simulator credentials of its own, `claims` says whether a request carries them.

Nothing here knows how a client pages. Faults and hooks match on method and path only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import itertools
import json
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar, Self

import orjson
from aiohttp import web

from .meter import LoadMeter

CONTROL_PREFIX = "/_sandbox/"
ACCOUNT_NAME = re.compile(r"[a-z][a-z0-9_]*")  # an instance name in pipeline.toml

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Respond = Callable[[], Awaitable[web.StreamResponse]]
Hook = Callable[["Simulator", "LoggedRequest"], Awaitable[None] | None]


def utc_now() -> datetime:
    return datetime.now(UTC)


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_DAYS: dict[int, str] = {}


def format_seconds(seconds: int) -> str:
    """`YYYY-MM-DDTHH:MM:SS` in UTC for epoch seconds; cached per day, as seeding 200k records
    formats hundreds of thousands of timestamps."""
    day, rest = divmod(seconds, 86_400)
    date = _DAYS.get(day)
    if date is None:
        date = _DAYS[day] = time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{date}T{hours:02d}:{minutes:02d}:{secs:02d}"


def account_secret(source: str, account: str, purpose: str, length: int = 32) -> str:
    """A credential of an account, derived from its name: the same on every run, so
    `pipeline sandbox --accounts N` prints the same [sources.*] tables each time, and never
    another account's."""
    digest = hashlib.sha256(f"{source}/{account}/{purpose}".encode()).hexdigest()
    while len(digest) < length:
        digest += hashlib.sha256(digest.encode()).hexdigest()
    return digest[:length]


def parse_at(value: Any) -> datetime | None:
    """Read an optional timestamp from a control-route body (ISO-8601, `Z` allowed)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- request log


@dataclass
class LoggedRequest:
    """One API request as the simulator saw it. Header names are lower-cased.

    `status` is filled once answered: 0 when the connection was dropped before a status line.
    `fault` names the fault (or `rate_limit`) that shaped the answer, if any.
    """

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    headers: dict[str, str]
    status: int | None = None
    fault: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- faults


class Fault:
    """A way for a request to go wrong. Subclass and implement `respond`.

    `respond` gets the simulator, the request and `serve`, a callable producing the normal
    response, so a fault can replace the answer, delay it, or damage it. Set `kind` to make the
    fault schedulable through `POST /_sandbox/faults`.
    """

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Fault]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Fault.registry[cls.kind] = cls

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Fault:
        """Build a fault from a control-route body such as `{"kind": "stall", "seconds": 3}`."""
        params = dict(spec)
        kind = params.pop("kind", None)
        fault_cls = cls.registry.get(str(kind))
        if fault_cls is None:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(cls.registry)}")
        return fault_cls(**params)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class HttpError(Fault):
    """An error status, by default with the source's own error body for that status.

    `retry_after` is sent verbatim: `"2"` (seconds) or an HTTP-date.
    """

    kind = "http_error"

    def __init__(
        self,
        status: int,
        retry_after: str | int | None = None,
        body: bytes | str | None = None,
        content_type: str | None = None,
        message: str | None = None,
    ) -> None:
        self.status = status
        self.retry_after = None if retry_after is None else str(retry_after)
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.message = message

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        if self.body is None:
            return sim.error_response(self.status, self.message, headers=headers)
        headers["Content-Type"] = self.content_type or sim.json_content_type
        return web.Response(status=self.status, body=self.body, headers=headers)


class Redirect(Fault):
    """A redirect (302 by default) to `location`: on this host, or to another one to check
    that a client does not carry its credentials along."""

    kind = "redirect"

    def __init__(self, location: str, status: int = 302) -> None:
        self.location = location
        self.status = status

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        return web.Response(status=self.status, headers={"Location": self.location})


class Stall(Fault):
    """Wait, then answer normally: long enough and the client's timeout fires first."""

    kind = "stall"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        await asyncio.sleep(self.seconds)
        return await serve()


class DropConnection(Fault):
    """Close the TCP connection mid-response.

    With `send_headers` the status line, headers (with the full Content-Length) and half of the
    body go out first, so the client sees a payload error; otherwise the connection closes
    before any byte, so the client sees a disconnect.
    """

    kind = "drop_connection"

    def __init__(self, send_headers: bool = True) -> None:
        self.send_headers = send_headers

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        transport = request.transport
        if not self.send_headers:
            if transport is not None:
                transport.abort()
            return web.Response(status=200)
        normal = await serve()
        body = normal.body if isinstance(normal, web.Response) else b""
        body = body if isinstance(body, bytes) else b""
        stream = web.StreamResponse(status=normal.status)
        if "Content-Type" in normal.headers:
            stream.headers["Content-Type"] = normal.headers["Content-Type"]
        stream.content_length = max(len(body), 2)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        # Let the partial write reach the socket before aborting, or abort() discards it.
        await asyncio.sleep(0.01)
        if transport is not None:
            transport.abort()
        return stream


class TruncatedBody(Fault):
    """The normal status and headers, but only the first half of the body (invalid JSON)."""

    kind = "truncated_body"

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        normal = await serve()
        body = normal.body if isinstance(normal, web.Response) else b""
        body = body if isinstance(body, bytes) else b""
        headers = {"Content-Type": normal.headers.get("Content-Type", sim.json_content_type)}
        return web.Response(status=normal.status, body=body[: len(body) // 2], headers=headers)


class Rewrite(Fault):
    """The normal answer with parts of it replaced, as a server with a bug sends it: `fields`
    set in a JSON object body (a dotted name reaches into nested objects: `paging.total`),
    `headers` set (None removes one). Values go out as given, so a test can send what no
    honest server would: a total of 10**30, a count of "abc", a page number as a float."""

    kind = "rewrite"

    def __init__(
        self,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str | None] | None = None,
    ) -> None:
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        normal = await serve()
        body = normal.body if isinstance(normal, web.Response) else b""
        body = body if isinstance(body, bytes) else b""
        if self.fields:
            data = orjson.loads(body)
            if isinstance(data, dict):
                for name, value in self.fields.items():
                    *outer, last = name.split(".")
                    holder = data
                    for step in outer:
                        holder = holder.setdefault(step, {})
                    holder[last] = value
            # The standard library writes integers of any size (orjson stops at 64 bits).
            body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {k: v for k, v in normal.headers.items() if k.lower() != "content-length"}
        for name, value in self.headers.items():
            headers.pop(next((k for k in headers if k.lower() == name.lower()), name), None)
            if value is not None:
                headers[name] = value
        return web.Response(status=normal.status, body=body, headers=headers)


class HtmlPage(Fault):
    """An HTML page where JSON was expected, as a proxy or captive portal would send."""

    kind = "html_page"

    def __init__(self, status: int = 200, title: str | None = None) -> None:
        self.status = status
        self.title = title

    async def respond(
        self, sim: Simulator, request: web.Request, serve: Respond
    ) -> web.StreamResponse:
        title = self.title or f"{self.status} {reason(self.status)}"
        html = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return web.Response(status=self.status, text=html, content_type="text/html")


@dataclass
class ScheduledFault:
    """A fault waiting for matching requests; `fired` counts the requests it hit."""

    fault: Fault
    times: int | None
    after: int
    path_prefix: str | None
    method: str | None
    rate: float | None
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": repr(self.fault),
            "kind": self.fault.kind,
            "times_left": None if self.times is None else self.times - self.fired,
            "after": self.after,
            "path_prefix": self.path_prefix,
            "method": self.method,
            "rate": self.rate,
            "fired": self.fired,
        }


_UNSET: Any = object()


class FaultPlan:
    """Faults scheduled against future API requests.

    Every entry counts the requests that match it (method and path prefix): it lets the first
    `after` of them pass, then hits the next `times` (`None`: forever). With `rate`, each
    matching request past `after` is hit with that probability, drawn from a seeded RNG; `times`
    then defaults to forever. When several entries are ready for a request, the oldest wins.
    """

    def __init__(self, seed: int = 0) -> None:
        self._entries: list[ScheduledFault] = []
        self._rng = random.Random(seed)

    def add(
        self,
        fault: Fault,
        *,
        times: int | None = _UNSET,
        after: int = 0,
        path_prefix: str | None = None,
        method: str | None = None,
        rate: float | None = None,
    ) -> ScheduledFault:
        if times is _UNSET:
            times = None if rate is not None else 1
        entry = ScheduledFault(fault, times, after, path_prefix, method, rate)
        if times is None or times > 0:
            self._entries.append(entry)
        return entry

    def remove(self, entry: ScheduledFault) -> None:
        with contextlib.suppress(ValueError):
            self._entries.remove(entry)

    def clear(self) -> None:
        self._entries.clear()

    @property
    def pending(self) -> list[ScheduledFault]:
        return list(self._entries)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if any, updating every matching entry's counters."""
        chosen: ScheduledFault | None = None
        for entry in list(self._entries):
            if not entry.matches(method, path):
                continue
            if entry.after > 0:
                entry.after -= 1
                continue
            if chosen is not None:
                continue
            if entry.rate is not None and self._rng.random() >= entry.rate:
                continue
            chosen = entry
        if chosen is None:
            return None
        chosen.fired += 1
        if chosen.times is not None and chosen.fired >= chosen.times:
            self.remove(chosen)
        return chosen.fault


class TokenBucket:
    """Server-side rate limit; bursts up to one second's worth of requests [inferred]."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self._tokens = self.capacity
        self._stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------- simulator


class Simulator:
    """Base class of a simulated API. Subclasses implement `add_routes` and `error_body`.

    Override `truth` and `mutate` to expose the data through the control routes, and
    `add_control_routes` for source-specific controls. All data must come from `seed`.
    To share a server with other accounts of its API, implement `assign_credentials` and
    `claims`, and keep every per-response touch in `decorate_response`.
    """

    name: ClassVar[str] = "simulator"
    json_content_type: ClassVar[str] = "application/json"

    def __init__(
        self,
        *,
        seed: int = 1,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        clock: Callable[[], datetime] | None = None,
        rate_limit_per_second: float | None = None,
        request_log_limit: int | None = 100_000,
    ) -> None:
        self.seed = seed
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.clock: Callable[[], datetime] = clock or utc_now
        self.requests: list[LoggedRequest] = []
        self.request_log_limit = request_log_limit
        self.faults = FaultPlan(seed)
        self.load = LoadMeter()
        self._rate_limit: TokenBucket | None = None
        self.rate_limit_per_second = rate_limit_per_second
        self._hooks: list[Hook] = []
        self._seq = itertools.count(1)
        self._jitter_rng = random.Random(seed * 7919 + 1)
        self._app: web.Application | None = None
        # The account's name on a server of several (`as_account`); "" for a simulator alone.
        self.account = ""

    # -- configuration -----------------------------------------------------------------

    @property
    def rate_limit_per_second(self) -> float | None:
        return None if self._rate_limit is None else self._rate_limit.per_second

    @rate_limit_per_second.setter
    def rate_limit_per_second(self, value: float | None) -> None:
        self._rate_limit = TokenBucket(value) if value else None

    def on_request(self, callback: Hook) -> Callable[[], None]:
        """Run `callback(sim, logged_request)` before the handler of every API request.

        Use it to change data between two requests of a client. Returns a remover.
        """
        self._hooks.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._hooks.remove(callback)

        return remove

    def clear_requests(self) -> None:
        self.requests.clear()

    @property
    def in_flight(self) -> int:
        return self.load.in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most API requests this server was handling at once (since the last reset)."""
        return self.load.peak_in_flight

    @property
    def peak_per_second(self) -> int:
        """The most API requests that started within one second of each other."""
        return self.load.peak_per_second

    def reset_load(self) -> None:
        self.load.reset()

    # -- what subclasses provide ---------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    def add_control_routes(self, router: web.UrlDispatcher) -> None:
        """Add source-specific routes under `/_sandbox/`."""

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """The source's own error body for `status` (used by faults and the rate limit)."""
        return orjson.dumps({"error": reason(status), "message": message or reason(status)})

    def truth(self) -> list[dict[str, Any]]:
        return []

    def mutate(self, spec: dict[str, Any]) -> Any:
        raise ValueError("this simulator has no mutations")

    def info(self) -> dict[str, Any]:
        """What a user needs to point a client at this simulator (credentials included)."""
        return {"source": self.name, "seed": self.seed}

    async def decorate_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """Touch every API response just before its headers go out, faults' included (e.g.
        headers the source sends on every answer). Runs for the account that answered."""

    # -- accounts ------------------------------------------------------------------------

    def as_account(self, name: str) -> Self:
        """This simulator as the account `name` of a server of several accounts of its API
        (`accounts.Accounts`): with credentials of its own, derived from the name, so that no
        other account's match them. Call it before handing out any credential."""
        if not ACCOUNT_NAME.fullmatch(name):
            raise ValueError(
                f"account name {name!r}: use lower-case letters, digits and _ (a letter first), "
                "as an instance name in pipeline.toml"
            )
        self.account = name
        self.assign_credentials(name)
        return self

    def assign_credentials(self, name: str) -> None:
        """Replace every credential this simulator accepts (and any state that would make its
        issued tokens or sessions collide with another account's) with ones derived from
        `name`, e.g. with `account_secret(self.name, name, "token")`."""
        raise NotImplementedError(f"the {self.name} simulator cannot play one of several accounts")

    async def claims(self, request: web.Request) -> bool:
        """Whether `request` says it comes from this account: carries its identity (token,
        user name, client id) or a token or session it issued. Judge who, not whether rightly:
        a wrong password or an expired token of this account is this account's to refuse.
        Change nothing; reading the body is fine (aiohttp keeps it for the handler)."""
        raise NotImplementedError(f"the {self.name} simulator cannot play one of several accounts")

    # -- response helpers ----------------------------------------------------------------

    def json(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        all_headers = {"Content-Type": self.json_content_type}
        if headers:
            all_headers.update(headers)
        return web.Response(status=status, body=orjson.dumps(data), headers=all_headers)

    def error_response(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        all_headers = {"Content-Type": self.json_content_type}
        if headers:
            all_headers.update(headers)
        return web.Response(
            status=status, body=self.error_body(status, message), headers=all_headers
        )

    # -- the application -----------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        if self._app is None:
            self._app = self.build_app()
        return self._app

    def build_app(self) -> web.Application:
        """A fresh application over this simulator's state (one per server start)."""
        app = web.Application(middlewares=[self._middleware])
        self.add_all_routes(app.router)
        app.on_response_prepare.append(self._on_prepare)
        self._app = app
        return app

    def add_all_routes(self, router: web.UrlDispatcher) -> None:
        """The API's routes, then the control routes (the base ones, then the source's)."""
        self.add_routes(router)
        self._add_base_control_routes(router)
        self.add_control_routes(router)

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith(CONTROL_PREFIX):
            await self.decorate_response(request, response)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        return await self.handle_api(request, handler)

    def _log(self, request: web.Request) -> LoggedRequest:
        items = list(request.query.items())
        entry = LoggedRequest(
            seq=next(self._seq),
            at=time.monotonic(),
            method=request.method,
            path=request.path,
            query=dict(items),
            query_items=items,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.requests.append(entry)
        limit = self.request_log_limit
        if limit is not None and len(self.requests) > limit:
            del self.requests[: len(self.requests) - limit]
        return entry

    async def handle_api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer an API request with `handler` as this simulator does: logged, metered,
        hooked, delayed, rate-limited and faulted."""
        self.load.started()
        try:
            return await self._answer_api(request, handler)
        finally:
            self.load.finished()  # also when cancelled: the client closed the connection

    async def _answer_api(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = self._log(request)
        try:
            for hook in list(self._hooks):
                result = hook(self, entry)
                if inspect.isawaitable(result):
                    await result
            fault: Fault | None = None
            limited = self._rate_limit is not None and not self._rate_limit.allow()
            if not limited:
                fault = self.faults.take(request.method, request.path)
            delay = self.latency
            if self.latency_jitter:
                delay += self._jitter_rng.uniform(0, self.latency_jitter)
            if delay > 0:
                await asyncio.sleep(delay)

            async def serve() -> web.StreamResponse:
                return await self.call(handler, request)

            if limited:
                # [inferred] no seed documents 429; the body is the source's error shape.
                entry.fault = "rate_limit"
                response: web.StreamResponse = self.error_response(
                    429, "rate limit exceeded", headers={"Retry-After": "1"}
                )
            elif fault is not None:
                entry.fault = fault.kind or type(fault).__name__
                response = await fault.respond(self, request, serve)
            else:
                response = await serve()
        except BaseException:
            entry.status = 500
            raise
        transport = request.transport
        if not response.prepared and (transport is None or transport.is_closing()):
            entry.status = 0  # the connection was closed before any byte of a response
        else:
            entry.status = response.status
        return response

    async def call(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        """Run the route handler, giving router errors (404, 405) the source's error body."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return self.error_response(exc.status, None, headers=headers)

    # -- control routes ------------------------------------------------------------------

    def _add_base_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(CONTROL_PREFIX + "info", self._ctl_info)
        router.add_get(CONTROL_PREFIX + "requests", self._ctl_requests)
        router.add_post(CONTROL_PREFIX + "clear_requests", self._ctl_clear_requests)
        router.add_get(CONTROL_PREFIX + "stats", self._ctl_stats)
        router.add_post(CONTROL_PREFIX + "reset_stats", self._ctl_reset_stats)
        router.add_post(CONTROL_PREFIX + "latency", self._ctl_latency)
        router.add_post(CONTROL_PREFIX + "rate_limit", self._ctl_rate_limit)
        router.add_get(CONTROL_PREFIX + "faults", self._ctl_list_faults)
        router.add_post(CONTROL_PREFIX + "faults", self._ctl_add_fault)
        router.add_post(CONTROL_PREFIX + "clear_faults", self._ctl_clear_faults)
        router.add_get(CONTROL_PREFIX + "records", self._ctl_records)
        router.add_post(CONTROL_PREFIX + "mutate", self._ctl_mutate)

    @staticmethod
    def _ctl_json(data: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")

    @staticmethod
    async def _ctl_body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    async def _ctl_info(self, request: web.Request) -> web.Response:
        return self._ctl_json(self.info())

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "50"))
        recent = self.requests[-limit:] if limit > 0 else []
        return self._ctl_json(
            {"count": len(self.requests), "recent": [r.to_json() for r in recent]}
        )

    async def _ctl_clear_requests(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return self._ctl_json({"count": 0})

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return self._ctl_json(self.load.to_json())

    async def _ctl_reset_stats(self, request: web.Request) -> web.Response:
        self.load.reset()
        return self._ctl_json(self.load.to_json())

    async def _ctl_latency(self, request: web.Request) -> web.Response:
        try:
            body = await self._ctl_body(request)
            self.latency = float(body.get("seconds", 0.0))
            if "jitter" in body:
                self.latency_jitter = float(body["jitter"])
        except (ValueError, TypeError) as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"seconds": self.latency, "jitter": self.latency_jitter})

    async def _ctl_rate_limit(self, request: web.Request) -> web.Response:
        try:
            body = await self._ctl_body(request)
            value = body.get("per_second")
            self.rate_limit_per_second = None if value is None else float(value)
        except (ValueError, TypeError) as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"per_second": self.rate_limit_per_second})

    async def _ctl_list_faults(self, request: web.Request) -> web.Response:
        return self._ctl_json({"pending": [e.to_json() for e in self.faults.pending]})

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = await self._ctl_body(request)
            schedule: dict[str, Any] = {}
            for key in ("times", "after", "path_prefix", "method", "rate"):
                if key in spec:
                    schedule[key] = spec.pop(key)
            entry = self.faults.add(Fault.from_spec(spec), **schedule)
        except (ValueError, TypeError) as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"scheduled": entry.to_json()})

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return self._ctl_json({"pending": []})

    async def _ctl_records(self, request: web.Request) -> web.Response:
        records = self.truth()
        return self._ctl_json({"count": len(records), "records": records})

    async def _ctl_mutate(self, request: web.Request) -> web.Response:
        try:
            spec = await self._ctl_body(request)
            result = self.mutate(spec)
        except KeyError as exc:
            return self._ctl_json({"error": f"not found: {exc.args[0]}"}, 404)
        except (ValueError, TypeError) as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"result": result})


# --------------------------------------------------------------------------- serving


@dataclass
class RunningSimulator:
    """A simulator listening on a socket. `url` has no trailing slash.

    One account of a server of several (`accounts.RunningAccounts.account`) is a
    RunningSimulator too, at the server's URL: `server_load` is then the whole server's meter,
    and stopping it stops the server."""

    sim: Simulator
    host: str
    port: int
    runner: web.AppRunner = field(repr=False)
    server_load: LoadMeter | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def listen(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    finish_abandoned: bool = False,
) -> tuple[web.AppRunner, int]:
    """Serve `app` until the runner is cleaned up; port 0 picks a free port (returned).

    By default a request's handler is cancelled as soon as its client closes the connection,
    so a client that gives up on a stalled request does not keep its handler alive. With
    `finish_abandoned`, handlers run to the end whatever the client does, as many real servers
    (and the proxies before them) do: work a client walked away from still loads the server."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=not finish_abandoned,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def start(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    finish_abandoned: bool = False,
) -> RunningSimulator:
    """Serve `sim` until `stop()` (see `listen` for the options)."""
    runner, bound_port = await listen(
        sim.build_app(),
        host,
        port,
        shutdown_timeout=shutdown_timeout,
        finish_abandoned=finish_abandoned,
    )
    return RunningSimulator(sim=sim, host=host, port=bound_port, runner=runner)


@contextlib.asynccontextmanager
async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    finish_abandoned: bool = False,
) -> AsyncIterator[RunningSimulator]:
    """`async with serve(sim) as running: ... running.url ...`"""
    running = await start(
        sim, host, port, shutdown_timeout=shutdown_timeout, finish_abandoned=finish_abandoned
    )
    try:
        yield running
    finally:
        await running.stop()
