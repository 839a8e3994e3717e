"""Several accounts of one API behind one server, each request answered by the account whose
credentials it carries.

A SaaS API serves all its customers at one host, and a pipeline.toml may hold several
`[sources.<instance>]` of one type pointing there: only the credentials tell the accounts
apart, so only they can keep one instance's rows from landing under another's `_source`.
`Accounts` serves several simulators of one API on one port. Each is an account
(`Simulator.as_account`: credentials of its own, data of its own); a request goes to the
first account that `claims` it and is from then on that account's in every respect: its
request log, load meter, hooks, latency, rate limit and faults. A request no account claims
(no credentials, or nobody's) is answered by the first account's route handler alone, which
refuses it with the API's own 401/403 body as a server of one would; only the server's meter
counts it (`unclaimed`).

Control routes: `/_sandbox/accounts/<name>/<route>` is an account's own `/_sandbox/<route>`
(records, mutate, faults, stats, ...); `GET /_sandbox/accounts` lists every account's info.
Unprefixed routes reach the first account, the server's default, as on a server of one;
except `/_sandbox/stats` and `/_sandbox/reset_stats`, which are the whole server's (with every
account's meter inside), and `/_sandbox/info`, the default's with every account's added.

    nl, be = SohoSimulator(seed=1).as_account("nl"), SohoSimulator(seed=2).as_account("be")
    async with serve_accounts(Accounts([nl, be])) as running:
        running.account("nl")  # a RunningSimulator at the server's URL, for settings
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .core import CONTROL_PREFIX, Handler, RunningSimulator, Simulator, listen
from .meter import LoadMeter

ACCOUNTS_PREFIX = CONTROL_PREFIX + "accounts/"
# The server's own control routes; every other unprefixed one is the default account's.
SERVER_ROUTES = frozenset({"info", "stats", "reset_stats"})
# The account answering the current API request (None: no account claimed it), for the
# response-prepare signal, which runs after the handler in the same task.
_ANSWERED_BY: ContextVar[Simulator | None] = ContextVar("sandbox_answered_by", default=None)

Route = tuple[str, str, Handler]  # method, path as registered, handler


class _RecordingRouter(web.UrlDispatcher):
    """A router that keeps each route's path as registered, so that another router can
    register the same routes with other handlers."""

    def __init__(self) -> None:
        super().__init__()
        self._paths: dict[int, str] = {}

    def add_resource(self, path: str, *, name: str | None = None) -> web.Resource:
        resource = super().add_resource(path, name=name)
        self._paths[id(resource)] = path
        return resource

    def table(self) -> list[Route]:
        return [
            (route.method, self._paths[id(route.resource)], route.handler)
            for route in self.routes()
        ]


def _routes_of(sim: Simulator) -> list[Route]:
    router = _RecordingRouter()
    sim.add_all_routes(router)
    return router.table()


class Accounts:
    """Simulators of one API, each an account (`as_account`), served together on one port.

    The first is the default: it answers what no account claims and the unprefixed control
    routes. `load` meters the whole server; each account's own `load` meters what it answered.
    """

    def __init__(self, sims: Iterable[Simulator]) -> None:
        given = list(sims)
        if not given:
            raise ValueError("Accounts needs at least one simulator")
        kinds = {type(sim) for sim in given}
        if len(kinds) > 1:
            raise ValueError(
                "the accounts of one server play one API; got "
                + ", ".join(sorted(k.__name__ for k in kinds))
            )
        self.accounts: dict[str, Simulator] = {}
        for sim in given:
            if not sim.account:
                raise ValueError(
                    f"a {sim.name} simulator without an account name: give each account its "
                    "own credentials with sim.as_account(name)"
                )
            if sim.account in self.accounts:
                raise ValueError(f"two accounts named {sim.account!r}")
            self.accounts[sim.account] = sim
        self.name = given[0].name
        self.default = given[0]
        self.load = LoadMeter()
        self.unclaimed = 0  # requests no account claimed (answered by the default's handler)
        self._routes = {name: _routes_of(sim) for name, sim in self.accounts.items()}
        shape = [(method, path) for method, path, _ in self._routes[self.default.account]]
        for name, routes in self._routes.items():
            if [(method, path) for method, path, _ in routes] != shape:
                raise ValueError(f"account {name!r} has other routes than {self.default.account!r}")

    def __getitem__(self, name: str) -> Simulator:
        return self.accounts[name]

    def __iter__(self) -> Iterator[Simulator]:
        return iter(self.accounts.values())

    def __len__(self) -> int:
        return len(self.accounts)

    @property
    def peak_in_flight(self) -> int:
        return self.load.peak_in_flight

    @property
    def peak_per_second(self) -> int:
        return self.load.peak_per_second

    def reset_load(self) -> None:
        """Forget the peaks of the server and of every account."""
        self.load.reset()
        for sim in self:
            sim.reset_load()

    async def owner(self, request: web.Request) -> Simulator | None:
        """The account whose credentials `request` carries, if any."""
        for sim in self:
            if await sim.claims(request):
                return sim
        return None

    # -- the application -----------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for index, (method, path, handler) in enumerate(self._routes[self.default.account]):
            if not path.startswith(CONTROL_PREFIX):
                app.router.add_route(method, path, self._api_route(index))
                continue
            rest = path.removeprefix(CONTROL_PREFIX)
            per_account = f"{ACCOUNTS_PREFIX}{{account}}/{rest}"
            app.router.add_route(method, per_account, self._control_route(index))
            if rest not in SERVER_ROUTES:
                app.router.add_route(method, path, handler)
        app.router.add_get(CONTROL_PREFIX + "info", self._ctl_info)
        app.router.add_get(CONTROL_PREFIX + "stats", self._ctl_stats)
        app.router.add_post(CONTROL_PREFIX + "reset_stats", self._ctl_reset_stats)
        app.router.add_get(ACCOUNTS_PREFIX.rstrip("/"), self._ctl_accounts)
        app.on_response_prepare.append(self._on_prepare)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        _ANSWERED_BY.set(None)
        self.load.started()
        try:
            # Router errors (no such route: 404, 405) in the API's own body, the default's.
            return await self.default.call(handler, request)
        finally:
            self.load.finished()

    def _api_route(self, index: int) -> Handler:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            owner = await self.owner(request)
            if owner is None:
                self.unclaimed += 1
                return await self._routes[self.default.account][index][2](request)
            _ANSWERED_BY.set(owner)
            return await owner.handle_api(request, self._routes[owner.account][index][2])

        return dispatch

    def _control_route(self, index: int) -> Handler:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            name = request.match_info["account"]
            if name not in self.accounts:
                known = ", ".join(self.accounts)
                return _json({"error": f"no account {name!r} here; accounts: {known}"}, 404)
            return await self._routes[name][index][2](request)

        return dispatch

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith(CONTROL_PREFIX):
            await (_ANSWERED_BY.get() or self.default).decorate_response(request, response)

    # -- the server's control routes -----------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "accounts": {name: sim.info() for name, sim in self.accounts.items()},
        }

    def stats(self) -> dict[str, Any]:
        return {
            **self.load.to_json(),
            "unclaimed": self.unclaimed,
            "accounts": {name: sim.load.to_json() for name, sim in self.accounts.items()},
        }

    async def _ctl_info(self, request: web.Request) -> web.Response:
        return _json({**self.default.info(), "accounts": self.info()["accounts"]})

    async def _ctl_accounts(self, request: web.Request) -> web.Response:
        return _json(self.info())

    async def _ctl_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats())

    async def _ctl_reset_stats(self, request: web.Request) -> web.Response:
        self.reset_load()
        self.unclaimed = 0
        return _json(self.stats())


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


# --------------------------------------------------------------------------- serving


@dataclass
class RunningAccounts:
    """An accounts server listening on a socket; `account(name)` is one account as a
    `RunningSimulator` at the server's URL (what settings and the tests' limits take)."""

    accounts: Accounts
    host: str
    port: int
    runner: web.AppRunner = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def account(self, name: str) -> RunningSimulator:
        return RunningSimulator(
            sim=self.accounts[name],
            host=self.host,
            port=self.port,
            runner=self.runner,
            server_load=self.accounts.load,
        )

    def each(self) -> dict[str, RunningSimulator]:
        """Every account, by name, in the server's order."""
        return {name: self.account(name) for name in self.accounts.accounts}

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_accounts(
    accounts: Accounts,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    finish_abandoned: bool = False,
) -> RunningAccounts:
    """Serve `accounts` until `stop()` (the options are `core.listen`'s)."""
    runner, bound_port = await listen(
        accounts.build_app(),
        host,
        port,
        shutdown_timeout=shutdown_timeout,
        finish_abandoned=finish_abandoned,
    )
    return RunningAccounts(accounts=accounts, host=host, port=bound_port, runner=runner)


@contextlib.asynccontextmanager
async def serve_accounts(
    accounts: Accounts,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 1.0,
    finish_abandoned: bool = False,
) -> AsyncIterator[RunningAccounts]:
    """`async with serve_accounts(accounts) as running: ... running.account("nl") ...`"""
    running = await start_accounts(
        accounts, host, port, shutdown_timeout=shutdown_timeout, finish_abandoned=finish_abandoned
    )
    try:
        yield running
    finally:
        await running.stop()
