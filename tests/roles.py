"""Logins in the reader roles of revision 0007, for tests that must run with their rights.

Roles belong to the server, which every test database shares: each login gets a name of its
own (process and counter) and is dropped when the test ends, after its connections closed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pipeline.db import plain_url

_counter = itertools.count()
PASSWORD = "reader-test-password"


def as_user(url: str, user: str, password: str = PASSWORD) -> str:
    """The same server and database, logged in as `user`."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@asynccontextmanager
async def login_in(database_url: str, role: str | None) -> AsyncIterator[str]:
    """A LOGIN role in `role` (`CREATE ROLE ... IN ROLE`, as the README tells a BI tool's
    administrator), or in no role at all (None: a login nobody granted anything): yields a URL
    of `database_url`'s database logged in as it."""
    name = f"pipeline_test_login_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        member = f" IN ROLE {role}" if role else ""
        await admin.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'{member}")
        try:
            yield as_user(database_url, name)
        finally:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
            )
            await admin.execute(f"DROP ROLE {name}")
    finally:
        await admin.close()
