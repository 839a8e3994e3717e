"""Every test is held to its sources' limits, as the simulators saw them.

Whatever builds a test's settings (`tests.helpers.make_settings`, `expect_config`) registers each
running simulator with the `max_concurrency` and `requests_per_second` its source was configured
with, defaults included. The autouse fixture in `tests/conftest.py` then fails the test when a
simulator saw more requests in flight at once than that cap, or more starts within one second
than that rate. The simulators only measure; the limits live here, with the tests.

Several accounts of one API on one server (`pipeline.sandbox.Accounts`) are each configured as
an instance: each account's meter is held to its own instance's limits, and the server's (which
also counts requests no account claimed, e.g. with a revoked token) to the sum of them.

Simulators no settings point at (raw aiohttp tests of the simulators themselves) are not
checked; a test that drives the client past its limits on purpose says so with
`@pytest.mark.unchecked_limits("why")`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from pipeline.config import Settings, SourceSettings, load_settings
from pipeline.sandbox import SANDBOXES, RunningSimulator, Simulator
from pipeline.sandbox.meter import LoadMeter
from pipeline.sources import SOURCES


@dataclass
class Limits:
    source: str
    max_concurrency: int
    requests_per_second: float | None  # None: no rate limit configured


class LimitWatch:
    """The limits of the simulators one test drives through the client."""

    def __init__(self) -> None:
        self._watched: dict[int, tuple[Simulator, Limits]] = {}
        # A server of several accounts: its meter, and the accounts watched behind it.
        self._servers: dict[int, tuple[LoadMeter, set[int]]] = {}

    def expect(
        self,
        sim: Simulator,
        source: str,
        settings: SourceSettings,
        server_load: LoadMeter | None = None,
    ) -> None:
        """Hold `sim` to `settings`. A simulator a test configured twice is held to the looser
        of the two: each run was entitled to its own settings, and peaks cover both. With
        `server_load`, `sim` is one account of a server whose meter that is."""
        limits = Limits(source, settings.max_concurrency, settings.requests_per_second)
        known = self._watched.get(id(sim))
        if known is not None:
            old = known[1]
            limits.max_concurrency = max(old.max_concurrency, limits.max_concurrency)
            before, now = old.requests_per_second, limits.requests_per_second
            limits.requests_per_second = None if before is None or now is None else max(before, now)
        self._watched[id(sim)] = (sim, limits)
        if server_load is not None:
            self._servers.setdefault(id(server_load), (server_load, set()))[1].add(id(sim))

    def holds(self, sim: Simulator) -> bool:
        """Whether `sim` is held to some settings."""
        return id(sim) in self._watched

    def violations(self) -> list[str]:
        found = self._server_violations()
        for sim, limits in self._watched.values():
            if sim.peak_in_flight > limits.max_concurrency:
                found.append(
                    f"{limits.source}: the simulator saw {sim.peak_in_flight} requests in flight "
                    f"at once; max_concurrency = {limits.max_concurrency}"
                )
            rate = limits.requests_per_second
            if rate is not None and sim.peak_per_second > rate:
                found.append(
                    f"{limits.source}: the simulator saw {sim.peak_per_second} requests start "
                    f"within one second; requests_per_second = {rate:g}"
                )
        return found

    def _server_violations(self) -> list[str]:
        found = []
        for load, accounts in self._servers.values():
            limits = [self._watched[account][1] for account in accounts]
            cap = sum(limit.max_concurrency for limit in limits)
            rates = [limit.requests_per_second for limit in limits]
            names = ", ".join(sorted(limit.source for limit in limits))
            if load.peak_in_flight > cap:
                found.append(
                    f"the server of {names}: saw {load.peak_in_flight} requests in flight at "
                    f"once; their max_concurrency add up to {cap}"
                )
            rate = None if None in rates else sum(r or 0.0 for r in rates)
            if rate is not None and load.peak_per_second > rate:
                found.append(
                    f"the server of {names}: saw {load.peak_per_second} requests start within "
                    f"one second; their requests_per_second add up to {rate:g}"
                )
        return found


_current: LimitWatch | None = None


def watch() -> LimitWatch:
    """A fresh watch for the test about to run (the autouse fixture's)."""
    global _current
    _current = LimitWatch()
    return _current


def current() -> LimitWatch | None:
    """The running test's watch (None outside the autouse fixture)."""
    return _current


def stop_watching() -> None:
    global _current
    _current = None


def expect_settings(settings: Settings, running: dict[str, RunningSimulator | None]) -> None:
    """Register the simulators `settings` point at, by source name."""
    if _current is None:
        return
    for name, sim in running.items():
        if sim is not None and name in settings.sources:
            _current.expect(sim.sim, name, settings.sources[name].settings, sim.server_load)


def expect_config(path: Path, env: Mapping[str, str], *running: RunningSimulator) -> None:
    """Register the simulators a pipeline.toml written by a test points at (for tests that run
    the `pipeline` command), read as the command reads it, with the environment it gets.
    Accounts of one server (one URL) are told apart by the credentials each instance holds."""
    settings = load_settings(path, {**os.environ, **env}, SOURCES)
    by_source: dict[str, RunningSimulator | None] = {}
    for name, config in settings.sources.items():
        at_url = [r for r in running if config.settings.base_url.startswith(r.url)]
        if len(at_url) > 1:
            at_url = [r for r in at_url if _holds_credentials_of(config.settings, r)]
        by_source[name] = at_url[0] if at_url else None
    expect_settings(settings, by_source)


def _holds_credentials_of(settings: SourceSettings, running: RunningSimulator) -> bool:
    """Whether `settings` carry the credentials `running`'s simulator issued."""
    issued = SANDBOXES[running.sim.name].credentials(running.sim)
    held = {key: getattr(settings, key, None) for key in issued}
    held = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in held.items()}
    return held == issued
