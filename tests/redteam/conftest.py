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


@pytest.fixture
def on_test_database(monkeypatch: pytest.MonkeyPatch, database_url: str) -> str:
    """The `pipeline` command run in-process talks to the test's database, and reads no
    configuration but the one a test names."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    return database_url
