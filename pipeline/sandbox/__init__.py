"""Local simulators of the source APIs, served on loopback for the demo, tests and benchmarks.

async with serve(SohoSimulator(customers=500)) as running:
    ...  # point a client at running.url
"""

from __future__ import annotations

from .afosto import AfostoSimulator
from .core import (
    DropConnection,
    Fault,
    FaultPlan,
    HtmlPage,
    HttpError,
    LoggedRequest,
    Redirect,
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
from .valomnia import ValomniaSimulator

__all__ = [
    "AfostoSimulator",
    "DigiLockerSimulator",
    "DropConnection",
    "Fault",
    "FaultPlan",
    "HtmlPage",
    "HttpError",
    "LoggedRequest",
    "Redirect",
    "RunningSimulator",
    "ScheduledFault",
    "Simulator",
    "SohoSimulator",
    "SparkflySimulator",
    "Stall",
    "TruncatedBody",
    "ValomniaSimulator",
    "serve",
    "start",
]
