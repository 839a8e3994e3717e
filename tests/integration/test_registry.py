"""The source registry: every source has its simulator's declaration, and one source added to
the registry reaches the tests' settings, a sync, the demo, `pipeline sandbox`, the benchmark's
simulators, the stream contract and the fault matrix without a line changed in any of them.

The throwaway source `echo` is Soho's customers stream under another name, served by a Soho
simulator that says it is `echo`, loaded into a table shaped like `soho.customers`: a source of
its own as far as everything that goes over the registry can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import io
import pkgutil
import random
import re
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

import pipeline.sandbox
import pipeline.sources
from pipeline.cli import build_parser
from pipeline.commands import _sizes
from pipeline.demo import _change_sources, build_simulators, default_sizes, serve_sandbox
from pipeline.registry import SOURCE_NAMES
from pipeline.sandbox import (
    SANDBOXES,
    FaultTarget,
    HttpError,
    Removal,
    SandboxSource,
    SandboxStream,
    Size,
    SohoSimulator,
    serve,
)
from pipeline.sources import SOURCES, soho
from pipeline.streams import SourceSpec
from tests.helpers import execute, live_rows, make_settings, sync
from tests.integration import test_fault_matrix as fault_matrix
from tests.integration import test_stream_contract as stream_contract

ROOT = Path(__file__).resolve().parents[2]


class EchoSimulator(SohoSimulator):
    name: ClassVar[str] = "echo"


def _echo_changes(sim: EchoSimulator, rng: random.Random) -> str:
    sim.delete_customer(rng.choice(sim.ids))
    return "1 echo deleted"


ECHO = SourceSpec(
    name="echo",
    title="Echo",
    settings_model=soho.SohoSettings,
    make_auth=soho.SOURCE.make_auth,
    streams=(soho.customers,),
)
ECHO_SANDBOX = SandboxSource(
    name="echo",
    make=lambda seed, sizes: EchoSimulator(customers=sizes["echoes"], seed=seed),
    credentials=lambda sim: {"token": sim.token},
    api_path="/api/v1",
    sizes=(Size("echoes", 30, "Echo customers"),),
    port=8799,
    demo_changes=_echo_changes,
    small=lambda seed: EchoSimulator(customers=20, seed=seed),
    streams={
        "customers": SandboxStream(
            records=lambda sim: sim.truth(), removal=Removal({"op": "delete", "id": "{id}"})
        ),
    },
    faults=FaultTarget(
        stream="customers",
        make=lambda seed: EchoSimulator(customers=60, seed=seed),
        list_path="/api/v1/customers",
        page_size=25,
        record=lambda sim, i: sim._customers[sim.ids[i]],
    ),
)


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`echo` registered for this test only, as its two modules would register it."""
    monkeypatch.setitem(SOURCES, "echo", ECHO)
    monkeypatch.setitem(SANDBOXES, "echo", ECHO_SANDBOX)


async def _echo_tables(engine: AsyncEngine) -> None:
    """What echo's migration would add: a table shaped like the one of the stream it borrows."""
    await execute(engine, "CREATE SCHEMA echo")
    await execute(engine, "CREATE TABLE echo.customers (LIKE soho.customers INCLUDING ALL)")


def _declaring(package: Any, attribute: str) -> set[str]:
    """The modules of `package` that declare `attribute` (SOURCE or SANDBOX)."""
    names = {m.name for m in pkgutil.iter_modules(package.__path__)}
    return {
        n for n in names if hasattr(importlib.import_module(f"{package.__name__}.{n}"), attribute)
    }


def test_every_source_has_a_sandbox_and_every_sandbox_a_source() -> None:
    assert sorted(SOURCES) == sorted(SANDBOXES) == sorted(SOURCE_NAMES)
    # A module that declares a source or a simulator but is missing from the registry:
    assert _declaring(pipeline.sources, "SOURCE") == set(SOURCE_NAMES)
    assert _declaring(pipeline.sandbox, "SANDBOX") == set(SOURCE_NAMES)


def test_every_sandbox_declares_each_stream_of_its_source_and_no_other() -> None:
    """What the stream contract needs of a stream (and its documented exceptions) is declared
    beside its simulator; one left behind by a renamed or removed stream is an error too."""
    for name, sandbox in SANDBOXES.items():
        streams = [s.name for s in SOURCES[name].streams]
        assert sorted(sandbox.streams) == sorted(streams), name
        assert sandbox.faults.stream in streams, name


def test_sizes_and_ports_are_unique_across_sources() -> None:
    """Every size is a `--<name>` option of `pipeline demo`, every port one of `sandbox`."""
    sizes = [s.name for sb in SANDBOXES.values() for s in sb.sizes]
    ports = [sb.port for sb in SANDBOXES.values()]
    assert len(sizes) == len(set(sizes)) and len(ports) == len(set(ports))


async def test_each_declared_simulator_is_its_source_and_its_settings_validate() -> None:
    for name, sandbox in SANDBOXES.items():
        sim = sandbox.build(3, {s.name: 4 for s in sandbox.sizes})
        assert sim.name == name, f"{name}: SANDBOX builds a {type(sim).__name__}"
        async with serve(sim) as running:
            settings = make_settings(running)  # validated by the source's settings model
            assert (
                settings.sources[name].settings.base_url
                == SANDBOXES[name].settings(running)["base_url"]
            )
            assert list(settings.sources) == [name]


def test_make_settings_refuses_what_is_not_a_registered_source() -> None:
    with pytest.raises(TypeError, match="echo"):
        make_settings(echo=None)
    with pytest.raises(TypeError, match="sources: soho, valomnia"):
        make_settings(soho_extras={})


async def test_a_registered_source_syncs_through_make_settings(
    echo: None, engine: AsyncEngine
) -> None:
    await _echo_tables(engine)
    async with serve(ECHO_SANDBOX.build(5, {"echoes": 12})) as running:
        by_position = make_settings(running)
        by_name = make_settings(echo=running, echo_extra={"max_concurrency": 2})
        outcome = (await sync(engine, by_name, "echo.customers"))["echo.customers"]
        truth = {c["id"]: c for c in running.sim.truth()}  # type: ignore[attr-defined]

    assert by_position.sources["echo"].settings.base_url == f"{running.url}/api/v1"
    assert by_name.sources["echo"].settings.max_concurrency == 2
    assert outcome.status == "succeeded", outcome.error
    assert await live_rows(engine, "echo.customers") == truth and len(truth) == 12


async def test_the_demo_and_the_sandbox_command_take_a_registered_source(echo: None) -> None:
    args = build_parser().parse_args(["sandbox", "--echo-port", "0", "--echoes", "7"])
    assert args.echo_port == 0 and _sizes(args)["echoes"] == 7
    demo = build_parser().parse_args(["demo"])
    assert _sizes(demo) == default_sizes() and default_sizes()["echoes"] == 30

    sims = build_simulators({**default_sizes(), "customers": 20, "echoes": 9})
    assert list(sims)[-1] == "echo" and len(sims["echo"].truth()) == 9
    said = _change_sources(sims, random.Random(7))
    assert said.endswith("; 1 echo deleted.") and len(sims["echo"].truth()) == 8

    out = io.StringIO()
    ports = dict.fromkeys(SANDBOXES, 0)
    sizes = {**default_sizes(), "customers": 5, "shipments": 5, "contacts": 5, "echoes": 3}
    console = Console(file=out, width=200)
    task = asyncio.create_task(
        serve_sandbox(sizes=sizes, host="127.0.0.1", ports=ports, console=console)
    )
    try:
        for _ in range(200):
            if "Serving until Ctrl-C." in out.getvalue():
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    text = out.getvalue()
    assert re.search(r"^Echo simulator: http://127\.0\.0\.1:\d+/api/v1$", text, re.MULTILINE)
    table = r'\[sources\.echo\]\nbase_url = "http://127\.0\.0\.1:\d+/api/v1"\ntoken = "(\w+)"\n'
    found = re.search(table, text)
    assert found is not None and found.group(1) == EchoSimulator(customers=1).token


def _contract_checks() -> list[Any]:
    """The stream contract's tests: its functions parametrised over every registered stream."""
    return [
        test
        for name, test in vars(stream_contract).items()
        if name.startswith("test_")
        and any(
            mark.name == "parametrize" and mark.args[0] == ("source", "stream")
            for mark in getattr(test, "pytestmark", [])
        )
    ]


CONTRACT = _contract_checks()


def test_the_contract_and_the_fault_matrix_are_parametrised_from_the_registry(
    echo: None,
) -> None:
    contract = {p.id: p.values for p in stream_contract.contract_streams()}
    assert contract["echo.customers"] == (ECHO, soho.customers)
    assert set(contract) == {f"{s.name}.{t.name}" for s in SOURCES.values() for t in s.streams}
    targets = {t.key: t for t in fault_matrix.targets()}
    assert set(targets) == {f"{name}.{sb.faults.stream}" for name, sb in SANDBOXES.items()}
    assert targets["echo.customers"].faults is ECHO_SANDBOX.faults
    assert len(CONTRACT) >= 5  # every contract test is found, so each runs for echo below


@pytest.mark.parametrize("check", CONTRACT, ids=[c.__name__ for c in CONTRACT])
async def test_a_registered_source_is_held_to_the_stream_contract(
    echo: None, engine: AsyncEngine, check: Any
) -> None:
    """Each of the contract's tests, run for echo's stream as its parametrisation gives it."""
    await _echo_tables(engine)
    params = {p.id: p.values for p in stream_contract.contract_streams()}
    source, stream = params["echo.customers"]
    given = {"engine": engine, "source": source, "stream": stream}
    result = check(**{k: v for k, v in given.items() if k in inspect.signature(check).parameters})
    if inspect.isawaitable(result):
        await result


async def test_a_registered_source_is_in_the_fault_matrix(echo: None, engine: AsyncEngine) -> None:
    """A fault and a bad record, on echo's fault target as the matrix builds it."""
    await _echo_tables(engine)
    (spec,) = [t for t in fault_matrix.targets() if t.source == "echo"]
    async with serve(spec.faults.make(fault_matrix.SEED)) as running:
        await fault_matrix.test_transient_faults_are_survived(
            engine, (spec, running), "500 burst", lambda: HttpError(500), 3
        )
    await execute(engine, "TRUNCATE echo.customers, pipeline.stream_state, pipeline.sync_runs")
    case, corrupt, quarantined = fault_matrix.BAD_RECORDS[0]
    await fault_matrix.test_bad_records_are_quarantined_and_the_rest_loads(
        engine, spec, case, corrupt, quarantined
    )


def test_the_benchmark_simulators_take_a_registered_source(echo: None) -> None:
    from bench.serve_sims import build_parser as bench_parser

    assert bench_parser().parse_args(["--echoes", "2"]).echoes == 2


@pytest.mark.parametrize(
    "path",
    [
        "pipeline/demo.py",
        "pipeline/cli.py",
        "tests/helpers.py",
        "tests/integration/test_stream_contract.py",
    ],
)
def test_no_source_is_named_where_the_registry_is_read(path: str) -> None:
    """What goes over every source reads the registry; a source's name here would be a branch
    (or a list) that the next source has to be added to."""
    text = (ROOT / path).read_text(encoding="utf-8").lower()
    assert [name for name in SOURCE_NAMES if name in text] == []
