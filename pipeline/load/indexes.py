"""A first load builds the table's secondary indexes once, at its end, instead of row by row.

Keeping two secondary indexes up to date cost ~0.6 s of Postgres time per 200,000 shipments,
about a tenth of the load; building them from the finished table takes a fraction of that (a
sort), which is how `pg_restore` loads too. Only a load into an empty table does it, where
nobody can yet rely on the indexes; the primary key stays, as it catches a record met twice.

The dropped definitions are kept in the stream's state (key + "#indexes") in the transaction
that drops them, and built again when the load ends or, after a crash, when the next run of
the stream starts: an index is never lost.
"""

from __future__ import annotations

import uuid

import asyncpg

from pipeline import statekeys
from pipeline.load.sql import SECONDARY_INDEXES
from pipeline.state import forget, read_state, save_checkpoint


def _state_key(stream_key: str) -> str:
    return str(statekeys.indexes(stream_key))


# Runs of several instances of one source type share its tables: their index work takes this
# transaction lock on the table, so two first loads never drop or build its indexes at once.
_TABLE_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('pipeline.indexes:' || $1::regclass::text, 0))"
)


async def defer(conn: asyncpg.Connection, table: str, stream_key: str, run_id: uuid.UUID) -> int:
    """Drop the table's secondary indexes, remembering them, if it is still empty once the
    table's lock is held (another instance may have loaded rows meanwhile); how many."""
    async with conn.transaction():
        await conn.execute(_TABLE_LOCK, table)
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):  # a declared name
            return 0
        found = await conn.fetch(SECONDARY_INDEXES, table)
        if not found:
            return 0
        pending = (await read_state(conn, _state_key(stream_key))).checkpoint or {}
        definitions = {**pending.get("definitions", {})}
        definitions.update({row["name"]: row["definition"] for row in found})
        await save_checkpoint(conn, _state_key(stream_key), {"definitions": definitions}, run_id)
        for row in found:
            await conn.execute(f"DROP INDEX IF EXISTS {row['name']}")  # a name from the catalog
    return len(found)


async def restore(conn: asyncpg.Connection, stream_key: str) -> int:
    """Build the indexes a first load of the stream dropped, if any; how many."""
    state = await read_state(conn, _state_key(stream_key))
    definitions: dict[str, str] = (state.checkpoint or {}).get("definitions", {})
    if not definitions:
        return 0
    async with conn.transaction():
        table = _table_of(next(iter(definitions.values())))
        if table is not None:
            await conn.execute(_TABLE_LOCK, table)
        for definition in definitions.values():
            await conn.execute(
                definition.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            )
        await forget(conn, _state_key(stream_key))
    return len(definitions)


def _table_of(definition: str) -> str | None:
    """The table of `CREATE INDEX name ON [ONLY] schema.table USING ...` (as Postgres writes
    it), to take the same lock as `defer`."""
    after = definition.split(" ON ", 1)[1] if " ON " in definition else ""
    words = after.split()
    if words and words[0] == "ONLY":
        words = words[1:]
    return words[0] if words else None
