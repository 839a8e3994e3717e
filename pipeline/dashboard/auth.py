"""Who may look: anyone on this machine, or, when a token is set, whoever presents it.

On a loopback address the dashboard may run open; any other bind needs
`PIPELINE_DASHBOARD_TOKEN` (at least 32 characters), and once a token is set every request must
carry it, as `Authorization: Bearer <token>` (scripts) or once as `?token=<token>` (a browser:
answered with a cookie and a redirect to the same page without it).

The cookie is not the token and not a fixed digest of it (which would open the pages for ever,
whatever max_age asks of the browser): it is `<issued>.<mac>`, the Unix second it was issued
and an HMAC-SHA256 over that number keyed with HMAC-SHA256(token, "pipeline-dashboard-cookie").
The server refuses it once it is COOKIE_LIFETIME old, a little in the future, or with a MAC
that does not hold; changing the token voids every cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from aiohttp import web

from pipeline.errors import ConfigError

TOKEN_ENV = "PIPELINE_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 32  # characters; token_urlsafe(32) gives 43
COOKIE = "pipeline_dashboard"
COOKIE_LIFETIME = timedelta(hours=12)  # a working day; then ?token= again
# Issued "in the future" by this much is still taken: the clock may step back a little (NTP).
CLOCK_SLACK = timedelta(minutes=1)
_COOKIE_KEY_LABEL = b"pipeline-dashboard-cookie"
_STAMP = re.compile(r"[0-9]{1,12}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without a token."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"dashboard: --host {host} is reachable from other machines; set {TOKEN_ENV} "
            "to a long random value (every request must then present it), or bind 127.0.0.1"
        )


def check_token(token: str) -> None:
    """Refuse a token short enough to guess; the message never shows it, nor its length."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"dashboard: {TOKEN_ENV} is too short; use at least {MIN_TOKEN_LENGTH} random "
            "characters, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def _cookie_mac(token: str, stamp: str) -> str:
    key = hmac.new(token.encode(), _COOKIE_KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(key, stamp.encode(), hashlib.sha256).hexdigest()


def cookie_value(token: str, issued: datetime) -> str:
    """The cookie `?token=` sets at `issued` (see the module's docstring)."""
    stamp = str(int(issued.timestamp()))
    return f"{stamp}.{_cookie_mac(token, stamp)}"


def cookie_valid(token: str, value: str, now: datetime) -> bool:
    """Whether `value` is a cookie issued with `token` that has not expired at `now`."""
    stamp, dot, mac = value.partition(".")
    if not dot or not _STAMP.fullmatch(stamp):
        return False
    if not hmac.compare_digest(mac.encode(), _cookie_mac(token, stamp).encode()):
        return False
    age = timedelta(seconds=now.timestamp() - int(stamp))
    return -CLOCK_SLACK <= age <= COOKIE_LIFETIME


def token_middleware(
    token: str, clock: Callable[[], datetime]
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Every request must present `token` (or a cookie it issued, judged at `clock()`)."""
    hours = int(COOKIE_LIFETIME.total_seconds() // 3600)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            rest = request.query.copy()
            rest.popall("token")
            target = request.rel_url.with_query(rest)
            response = web.HTTPSeeOther(location=str(target))
            response.set_cookie(
                COOKIE,
                cookie_value(token, clock()),
                httponly=True,
                samesite="Strict",
                path="/",
                max_age=int(COOKIE_LIFETIME.total_seconds()),
            )
            raise response
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(
            bearer.removeprefix("Bearer ").encode(), token.encode()
        ):
            return await handler(request)
        if cookie_valid(token, request.cookies.get(COOKIE, ""), clock()):
            return await handler(request)
        raise web.HTTPUnauthorized(
            text=f"This dashboard needs its token: open it with ?token=<token> (the browser "
            f"then keeps a cookie for {hours} hours), or send 'Authorization: Bearer <token>' "
            "(the value of PIPELINE_DASHBOARD_TOKEN where it runs).\n",
            headers={"WWW-Authenticate": 'Bearer realm="pipeline dashboard"'},
        )

    return require_token
