"""What a source's sandbox module declares, so that nothing else has to name the source.

`pipeline demo` and `pipeline sandbox` build every simulator from its declaration (seed and
sizes; several accounts of it behind one server with `build_accounts`), print or validate the
[sources.<name>] table that points the engine at it, and the demo
changes the data between its syncs through it; the tests' `make_settings` and the benchmark's
simulator process read the same declarations. So do the suites run against every source: the
stream contract (`small`, `streams`) and the fault matrix (`faults`). A declaration is data
plus a few small functions; building it does no I/O.

    SANDBOX = SandboxSource(
        name="soho",
        make=lambda seed, sizes: SohoSimulator(customers=sizes["customers"], seed=seed),
        credentials=lambda sim: {"token": sim.token},
        api_path="/api/v1",
        sizes=(Size("customers", 500, "Soho customers"),),
        port=8701,
        demo_changes=_demo_changes,
        small=lambda seed: SohoSimulator(customers=40, seed=seed),
        streams={
            "customers": SandboxStream(
                records=lambda sim: sim.truth(),
                removal=Removal({"op": "delete", "id": "{id}"}),
            ),
        },
        faults=FaultTarget(
            stream="customers",
            make=lambda seed: SohoSimulator(customers=80, seed=seed),
            list_path="/api/v1/customers",
            page_size=25,
            record=lambda sim, i: sim._customers[sim.ids[i]],
        ),
    )
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast

from .accounts import Accounts
from .core import RunningSimulator, Simulator

S = TypeVar("S", bound=Simulator)

MarkedBy = Literal["next sync", "second sync", "reconcile"]


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
class Removal:
    """How the stream contract removes one of a stream's records at the simulator, and which
    run must then mark it deleted.

    `mutate` is the simulator's `mutate` spec, each `{field}` filled from the removed record (or
    from the partition it was read under). `marked_by` is "next sync" unless the stream cannot
    do that: "second sync", "reconcile", or None for a stream whose records are never removed
    (then `mutate` is None too). Anything but "next sync" is an exception to the contract and
    `why` gives its documented reason.
    """

    mutate: Mapping[str, str] | None
    marked_by: MarkedBy | None = "next sync"
    why: str = ""

    def __post_init__(self) -> None:
        if (self.mutate is None) != (self.marked_by is None):
            raise ValueError(
                "Removal: give a mutate spec, or marked_by=None (with why=) for a stream whose "
                f"records are never removed; got mutate={self.mutate!r}, "
                f"marked_by={self.marked_by!r}"
            )
        if self.marked_by != "next sync" and not self.why:
            raise ValueError(f"Removal(marked_by={self.marked_by!r}): say why (why=...)")


@dataclass(frozen=True)
class SandboxStream(Generic[S]):
    """One stream as the stream contract (tests/integration/test_stream_contract.py) meets it
    on the simulator `SandboxSource.small` builds.

    `records(sim)` is what the simulator holds for the stream, as its list serves it (every
    partition's, for a partitioned stream); `removal` says how one is removed. The rest are the
    contract points the stream cannot meet, each with its documented reason; the contract checks
    them both ways, so an entry that stops being true fails until it is removed:
    `derived_key` says why the primary key is not a field of the record (the run derives it),
    `unserved` maps each declared column the simulator never fills to why.
    """

    records: Callable[[S], list[dict[str, Any]]]
    removal: Removal
    derived_key: str = ""
    unserved: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultTarget(Generic[S]):
    """The stream of a source that the fault matrix (tests/integration/test_fault_matrix.py)
    injects every fault into: a paged one where the source has one.

    `make(seed)` builds a simulator whose list spans several pages of `page_size` (None: the
    list is a single response; faults then hit its first request instead of a later page).
    `list_path` is the path (prefix) of the list's requests on the simulator, where faults are
    injected. `record(sim, i)` is the i-th record the simulator keeps and serves from (the
    object itself: changing it changes what the API serves), which the bad-record cases break
    as a faulty API would; None where the simulator keeps no such object (say why beside it),
    and the source then sits those cases out.
    """

    stream: str
    make: Callable[[int], S]
    list_path: str
    page_size: int | None
    record: Callable[[S, int], dict[str, Any]] | None = None


@dataclass(frozen=True)
class SandboxSource(Generic[S]):
    """One source's simulator, as the demo, `pipeline sandbox`, the tests and the benchmark use it.

    `make(seed, sizes)` builds the simulator the demo serves; `sizes` holds a value for every
    declared `Size`. `credentials(sim)` are the settings keys that authenticate against that
    simulator (what it issued); `api_path` is what follows its URL in `base_url`; `options` are
    further keys the [sources.<name>] table shows. `demo_changes(sim, rng)` makes the changes
    the demo's second sync must find (draw every random choice from `rng`) and says what it did
    in a phrase ("8 customers edited, 4 added"). `port` is where `pipeline sandbox` serves it.

    For the suites run against every source: `small(seed)` builds a simulator small enough for
    the stream contract and big enough to span several of its pages, `streams` declares each of
    the source's streams on it (`SandboxStream`), and `faults` the fault matrix's target.
    """

    name: str
    make: Callable[[int, Mapping[str, int]], S]
    credentials: Callable[[S], dict[str, Any]]
    demo_changes: Callable[[S, random.Random], str]
    port: int
    small: Callable[[int], S]
    streams: Mapping[str, SandboxStream[S]]
    faults: FaultTarget[S]
    sizes: tuple[Size, ...] = ()
    api_path: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.faults.stream not in self.streams:
            declared = ", ".join(self.streams)
            raise ValueError(
                f"pipeline/sandbox/{self.name}.py: the fault matrix's stream "
                f"{self.faults.stream!r} is not one of its SANDBOX's streams ({declared})"
            )

    def build(self, seed: int, sizes: Mapping[str, int] | None = None) -> S:
        """The simulator at `sizes` (by size name; a size not given takes its default)."""
        given = sizes or {}
        return self.make(seed, {s.name: given.get(s.name, s.default) for s in self.sizes})

    def build_accounts(
        self, seeds: Mapping[str, int], sizes: Mapping[str, int] | None = None
    ) -> Accounts:
        """A server of several accounts, one per name in `seeds`, each `build(seed, sizes)` with
        credentials of its own (`Simulator.as_account`); the first is the server's default.
        For accounts of other sizes or options, build each and give them to `Accounts`."""
        return Accounts(self.build(seed, sizes).as_account(name) for name, seed in seeds.items())

    def account_names(self, count: int) -> list[str]:
        """`<source>_a`, `<source>_b`, ...: the instance names `pipeline sandbox --accounts`
        gives its accounts."""
        if not 1 <= count <= 26:
            raise ValueError(f"from 1 to 26 accounts per source, not {count}")
        return [f"{self.name}_{chr(ord('a') + i)}" for i in range(count)]

    def settings(self, running: RunningSimulator) -> dict[str, Any]:
        """The [sources.<name>] table of a pipeline.toml that points at `running`."""
        sim = cast(S, running.sim)
        return {"base_url": running.url + self.api_path, **self.credentials(sim), **self.options}

    def change_for_demo(self, sim: Simulator, rng: random.Random) -> str:
        return self.demo_changes(cast(S, sim), rng)
