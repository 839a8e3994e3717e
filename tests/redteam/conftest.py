"""The red-team suite (issue "hostile neighbours and careless hands"): one test per finding,
each written to fail on the code before its fix, with real processes and real roles where the
finding needed them. Every test here is marked `redteam`, so `pytest -m redteam` runs them alone.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/redteam/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.redteam)
