"""What a command needs of its database login, checked before it starts, so that a login
without it gets one line naming the privilege and what to grant (exit 2) instead of a driver
traceback half-way through.

Readers (`status`) need to read the run history and state (what `pipeline_dashboard`, revision
0007, grants). Writers (`sync`, `backfill`, `reconcile`, `rederive`, `reset`, `schedule`,
`worker`) also write them; they run as the role that migrated the database (it owns every
table), or one granted as much. `db upgrade` changes the schema: the database's owner, or a
role with CREATE on it that owns the pipeline's schemas.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

Need = Literal["read", "write"]

# (privilege, object): tables via has_table_privilege, schemas via has_schema_privilege. An
# object that does not exist yet answers NULL: the schema check after this one says so.
_READ = [
    ("USAGE", "schema", "pipeline"),
    ("SELECT", "table", "public.alembic_version"),
    ("SELECT", "table", "pipeline.sync_runs"),
    ("SELECT", "table", "pipeline.stream_state"),
]
_WRITE = [
    *_READ,
    ("INSERT", "table", "pipeline.sync_runs"),
    ("UPDATE", "table", "pipeline.sync_runs"),
    ("INSERT", "table", "pipeline.stream_state"),
    ("UPDATE", "table", "pipeline.stream_state"),
    ("INSERT", "table", "pipeline.quarantine"),
]


def _check(privilege: str, kind: str, name: str) -> str:
    if kind == "schema":
        return (
            f"(SELECT has_schema_privilege(oid, '{privilege}') FROM pg_namespace "
            f"WHERE nspname = '{name}')"
        )
    schema, _, table = name.partition(".")
    # By oid from the catalog: naming the table would need USAGE on its schema first.
    return (
        f"(SELECT has_table_privilege(c.oid, '{privilege}') FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE n.nspname = '{schema}' AND c.relname = '{table}')"
    )


async def missing(conn: AsyncConnection, need: Need) -> tuple[str, list[str]]:
    """The login's name and what it lacks of `need` ("SELECT on table pipeline.sync_runs")."""
    wanted = _READ if need == "read" else _WRITE
    columns = ", ".join(_check(*w) for w in wanted)
    row = (await conn.execute(sa.text(f"SELECT current_user, {columns}"))).one()
    login, *granted = row
    lacks = [
        f"{p} on {k} {n}" for (p, k, n), ok in zip(wanted, granted, strict=True) if ok is False
    ]
    return str(login), lacks


def refusal(login: str, lacks: list[str], need: Need, command: str) -> str:
    """The one line a person gets: who, what it lacks, what to grant."""
    what = ", ".join(lacks[:3]) + (f" and {len(lacks) - 3} more" if len(lacks) > 3 else "")
    if need == "read":
        fix = (
            f'GRANT pipeline_dashboard TO "{login}" (the reader role of `pipeline db upgrade`), '
            "or run it as the role that runs the syncs"
        )
    else:
        fix = (
            f"run `pipeline {command}` as the role that ran `pipeline db upgrade` (it owns the "
            f'pipeline\'s tables), or grant "{login}" that much; reader roles cannot run streams'
        )
    return f'pipeline {command}: role "{login}" lacks {what}; {fix}'


__all__ = ["Need", "missing", "refusal"]
