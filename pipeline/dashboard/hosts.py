"""Which `Host` names the dashboard answers to: its defence against DNS rebinding.

A web page on evil.example can make its own name resolve to 127.0.0.1 and then read the
token-less loopback dashboard as if it were its own origin; what still gives it away is the
`Host` header, which says evil.example. So a request is answered only when its Host (port left
out, an IPv6 address in brackets) is a loopback name, the address the dashboard is bound to, or
a name the operator allowed (`--allow-host NAME`, `PIPELINE_DASHBOARD_HOSTS=a,b`); anything else
gets 421 before any page is read. A wildcard bind (0.0.0.0, ::) is no name anyone browses to,
so behind one only the loopback and the allowed names pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

from aiohttp import hdrs, web

from pipeline.errors import ConfigError

HOSTS_ENV = "PIPELINE_DASHBOARD_HOSTS"
ALLOW_OPTION = "--allow-host"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

# DNS labels (underscores too: Docker service names may have them), or an IPv4 address.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PORT = re.compile(r"[0-9]{0,5}")
SHOWN = 100  # characters of a refused Host quoted back


def host_of(value: str) -> str | None:
    """The name in a Host header (or an allowed name), lower-cased, without its port or an IPv6
    address's brackets, IPv6 in its short form; None when it is no host name at all (a path, a
    user@, an unbracketed IPv6 address, non-ASCII)."""
    value = value.strip().lower()
    if not value.isascii():
        return None
    if value.startswith("["):
        address, closed, rest = value[1:].partition("]")
        if not closed or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        try:
            return str(ipaddress.IPv6Address(address))
        except ValueError:
            return None
    name, colon, port = value.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None
    return name if len(name) <= 253 and _NAME.fullmatch(name) else None


def _allowed(value: str, source: str) -> str:
    name = host_of(value)
    if name is None:
        raise ConfigError(
            f"{source} {value!r}: not a host name; give a name or address the dashboard is "
            "reached by (e.g. dashboard, dashboard.example.com, 192.0.2.10, [fd00::10]), "
            "without scheme, path or wildcard"
        )
    return name


def configured_names(flags: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """The names of `--allow-host` and of `PIPELINE_DASHBOARD_HOSTS` (comma-separated), each
    checked; a malformed one is a ConfigError naming where it came from."""
    names = [_allowed(value, ALLOW_OPTION) for value in flags]
    listed = environ.get(HOSTS_ENV, "").split(",")
    return names + [_allowed(value, HOSTS_ENV) for value in listed if value.strip()]


def allowed_names(bind: str, configured: Iterable[str] = ()) -> frozenset[str]:
    """What a dashboard bound to `bind` answers to: the loopback names, the bound address
    unless it is a wildcard, and `configured` (from `configured_names`)."""
    names = set(LOOPBACK_NAMES) | {_allowed(value, "allowed host") for value in configured}
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:
        names.add(_allowed(bind, "--host"))  # bound by name: what its users put in Host
    else:
        if not address.is_unspecified:
            names.add(str(address))
    return frozenset(names)


def _refusal(given: list[str]) -> str:
    if len(given) != 1:
        what, name = ("no Host header" if not given else "several Host headers"), "NAME"
    else:
        what, name = f"Host {given[0][:SHOWN]!r}", host_of(given[0]) or "NAME"
    return (
        f"this dashboard does not answer to {what}: if that name is yours, start it with "
        f"{ALLOW_OPTION} {name} (or {HOSTS_ENV}={name}); loopback names always work\n"
    )


def host_check(allowed: Collection[str]) -> Middleware:
    """Refuse, with 421, every request whose Host is not in `allowed` (`allowed_names`)."""

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.getall(hdrs.HOST, [])
        if len(given) != 1 or host_of(given[0]) not in allowed:
            raise web.HTTPMisdirectedRequest(text=_refusal(given))
        return await handler(request)

    return check_host
