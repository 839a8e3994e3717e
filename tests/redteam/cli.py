"""What the red-team tests of the `pipeline` command share: a pipeline.toml for the Soho
simulator (its limits registered with the autouse check)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.sandbox import RunningSimulator
from tests.helpers import write_config
from tests.source_limits import expect_config


def soho_config(
    tmp_path: Path,
    soho: RunningSimulator,
    *,
    streams: dict[str, Any] | None = None,
    more: dict[str, dict[str, Any]] | None = None,
    **keys: Any,
) -> Path:
    """`[sources.soho]` at the simulator (with `keys`), its customers stream's `streams` keys,
    and `more` tables as they are."""
    token = soho.sim.token  # type: ignore[attr-defined]
    tables: dict[str, dict[str, Any]] = {
        "sources.soho": {"base_url": f"{soho.url}/api/v1", "token": token, **keys}
    }
    if streams is not None:
        tables["sources.soho.streams.customers"] = streams
    tables.update(more or {})
    path = write_config(tmp_path / "pipeline.toml", tables)
    expect_config(path, os.environ, soho)
    return path
