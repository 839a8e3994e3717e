"""Local simulators of the source APIs, served on loopback for the demo, tests and benchmarks.

async with serve(SohoSimulator(customers=500)) as running:
    ...  # point a client at running.url

Several accounts of one API on one server (`accounts.py`), each request answered by the
account whose credentials it carries:

async with serve_accounts(SANDBOXES["soho"].build_accounts({"soho_a": 1, "soho_b": 2})) as r:
    ...  # r.account("soho_a"): that account as a RunningSimulator at r.url

`SANDBOXES` holds each source's declaration (`spec.SandboxSource`: how the demo builds its
simulator and points the engine at it, and what the suites run against every source need of
it), read from the modules `pipeline.registry` lists.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from pipeline.registry import SOURCE_NAMES

from .accounts import Accounts, RunningAccounts, serve_accounts, start_accounts
from .afosto import AfostoSimulator
from .core import (
    DropConnection,
    Fault,
    FaultPlan,
    HtmlPage,
    HttpError,
    LoggedRequest,
    Redirect,
    Rewrite,
    RunningSimulator,
    ScheduledFault,
    Simulator,
    Stall,
    TruncatedBody,
    serve,
    start,
)
from .digilocker import DigiLockerSimulator
from .soho import SohoSimulator
from .sparkfly import SparkflySimulator
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream, Size
from .valomnia import ValomniaSimulator


def _declared(name: str) -> SandboxSource[Any]:
    sandbox = import_module(f"{__name__}.{name}").SANDBOX
    if not isinstance(sandbox, SandboxSource) or sandbox.name != name:
        raise ImportError(
            f"pipeline/sandbox/{name}.py: SANDBOX must be a SandboxSource named {name!r} "
            "(a source is known by its module's name)"
        )
    return sandbox


# In the registry's order: the order the demo and `pipeline sandbox` show the sources in.
SANDBOXES: dict[str, SandboxSource[Any]] = {name: _declared(name) for name in SOURCE_NAMES}

__all__ = [
    "SANDBOXES",
    "Accounts",
    "AfostoSimulator",
    "DigiLockerSimulator",
    "DropConnection",
    "Fault",
    "FaultPlan",
    "FaultTarget",
    "HtmlPage",
    "HttpError",
    "LoggedRequest",
    "Redirect",
    "Removal",
    "Rewrite",
    "RunningAccounts",
    "RunningSimulator",
    "SandboxSource",
    "SandboxStream",
    "ScheduledFault",
    "Simulator",
    "Size",
    "SohoSimulator",
    "SparkflySimulator",
    "Stall",
    "TruncatedBody",
    "ValomniaSimulator",
    "serve",
    "serve_accounts",
    "start",
    "start_accounts",
]
