"""Who may look: anyone on this machine, or, when a token is set, whoever presents it.

On a loopback address the dashboard may run open; any other bind needs
`PIPELINE_DASHBOARD_TOKEN`, and once a token is set every request must carry it, as
`Authorization: Bearer <token>` (scripts) or once as `?token=<token>` (a browser: answered with
a cookie and a redirect to the same page without it). The cookie holds a digest of the token,
not the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from pipeline.errors import ConfigError

TOKEN_ENV = "PIPELINE_DASHBOARD_TOKEN"
COOKIE = "pipeline_dashboard"
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


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"pipeline-dashboard-session", hashlib.sha256).hexdigest()


def token_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    session = cookie_value(token)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            rest = request.query.copy()
            rest.popall("token")
            target = request.rel_url.with_query(rest)
            response = web.HTTPSeeOther(location=str(target))
            response.set_cookie(
                COOKIE, session, httponly=True, samesite="Strict", path="/", max_age=30 * 86400
            )
            raise response
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(
            bearer.removeprefix("Bearer ").encode(), token.encode()
        ):
            return await handler(request)
        if hmac.compare_digest(request.cookies.get(COOKIE, "").encode(), session.encode()):
            return await handler(request)
        raise web.HTTPUnauthorized(
            text="This dashboard needs its token: open it once with ?token=<token>, or send "
            "'Authorization: Bearer <token>' (the value of PIPELINE_DASHBOARD_TOKEN where it "
            "runs).\n",
            headers={"WWW-Authenticate": 'Bearer realm="pipeline dashboard"'},
        )

    return require_token
