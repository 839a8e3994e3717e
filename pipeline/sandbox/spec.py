"""What a source's sandbox module declares, so that nothing else has to name the source.

`pipeline demo` and `pipeline sandbox` build every simulator from its declaration (seed and
sizes), print or validate the [sources.<name>] table that points the engine at it, and the demo
changes the data between its syncs through it; the tests' `make_settings` and the benchmark's
simulator process read the same declarations. A declaration is data plus a few small functions;
building it does no I/O.

    SANDBOX = SandboxSource(
        name="soho",
        make=lambda seed, sizes: SohoSimulator(customers=sizes["customers"], seed=seed),
        credentials=lambda sim: {"token": sim.token},
        api_path="/api/v1",
        sizes=(Size("customers", 500, "Soho customers"),),
        port=8701,
        demo_changes=_demo_changes,
    )
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from .core import RunningSimulator, Simulator

S = TypeVar("S", bound=Simulator)


@dataclass(frozen=True)
class Size:
    """How many records of one kind the demo's simulator holds; `pipeline demo` and
    `pipeline sandbox` take it as `--<name>` (so a size's name is unique across sources)."""

    name: str
    default: int
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class SandboxSource(Generic[S]):
    """One source's simulator, as the demo, `pipeline sandbox`, the tests and the benchmark use it.

    `make(seed, sizes)` builds the simulator the demo serves; `sizes` holds a value for every
    declared `Size`. `credentials(sim)` are the settings keys that authenticate against that
    simulator (what it issued); `api_path` is what follows its URL in `base_url`; `options` are
    further keys the [sources.<name>] table shows. `demo_changes(sim, rng)` makes the changes
    the demo's second sync must find (draw every random choice from `rng`) and says what it did
    in a phrase ("8 customers edited, 4 added"). `port` is where `pipeline sandbox` serves it.
    """

    name: str
    make: Callable[[int, Mapping[str, int]], S]
    credentials: Callable[[S], dict[str, Any]]
    demo_changes: Callable[[S, random.Random], str]
    port: int
    sizes: tuple[Size, ...] = ()
    api_path: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, seed: int, sizes: Mapping[str, int] | None = None) -> S:
        """The simulator at `sizes` (by size name; a size not given takes its default)."""
        given = sizes or {}
        return self.make(seed, {s.name: given.get(s.name, s.default) for s in self.sizes})

    def settings(self, running: RunningSimulator) -> dict[str, Any]:
        """The [sources.<name>] table of a pipeline.toml that points at `running`."""
        sim = cast(S, running.sim)
        return {"base_url": running.url + self.api_path, **self.credentials(sim), **self.options}

    def change_for_demo(self, sim: Simulator, rng: random.Random) -> str:
        return self.demo_changes(cast(S, sim), rng)
