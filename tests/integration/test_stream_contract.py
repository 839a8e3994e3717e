"""One contract, run against every declared stream and its real simulator.

The streams come from the registry (`pipeline.sources.SOURCES`), so a new stream is held to the
contract the day it is declared: it has one primary key; its columns and cursor are fields the
simulator really serves; every served record converts through the declared types; its walk
ends; a sync stores exactly what the simulator holds and a quiet re-sync writes nothing; a
record removed at the source answers 404 on the detail endpoint (where there is one) and is
marked deleted.

What differs between the simulators (how to build a small one, what it holds for a stream, how
to remove a record) is declared by each source's sandbox module (`SANDBOX.small` and
`SANDBOX.streams`, `pipeline.sandbox.spec`), not named here. So are the contract points a
stream cannot meet, each with its documented reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import exits
from pipeline.config import Settings
from pipeline.errors import NotFound
from pipeline.extract.http import JsonResponse
from pipeline.load import child_rows, convert_record
from pipeline.run import Mode, Runner, StreamOutcome
from pipeline.sandbox import SANDBOXES, RunningSimulator, SandboxStream, Simulator, serve
from pipeline.sources import SOURCES
from pipeline.streams import SourceSpec, Stream, dig
from pipeline.targets import StreamTarget, build_client, select_streams
from tests.helpers import make_settings, rows, scalar, sync

PAGE_SIZE = 7  # small, so that the small simulators are walked over several pages
SECONDS = 30.0  # far more than any walk or sync here needs: one that does not end fails
SEED = 41  # every source's small simulator is built from it


def contract_streams() -> list[Any]:
    """Every stream of every registered source, as the contract's parameters."""
    return [
        pytest.param(source, stream, id=f"{source.name}.{stream.name}")
        for source in SOURCES.values()
        for stream in source.streams
    ]


contract = pytest.mark.parametrize(("source", "stream"), contract_streams())


def _key(source: SourceSpec, stream: Stream) -> str:
    return f"{source.name}.{stream.name}"


def _small(source: SourceSpec) -> Simulator:
    return SANDBOXES[source.name].small(SEED)


def _declared(source: SourceSpec, stream: Stream) -> SandboxStream[Any]:
    """What the source's sandbox module declares of the stream (`SANDBOX.streams`)."""
    declared = SANDBOXES[source.name].streams.get(stream.name)
    if declared is None:
        pytest.fail(
            f"{_key(source, stream)}: pipeline/sandbox/{source.name}.py declares no "
            f"SandboxStream for it; add {stream.name!r} to its SANDBOX's streams"
        )
    return declared


def _settings(source: SourceSpec, stream: Stream, running: RunningSimulator) -> Settings:
    simulator: dict[str, Any] = {source.name: running}
    return make_settings(**simulator, streams={_key(source, stream): {"page_size": PAGE_SIZE}})


def _target(source: SourceSpec, stream: Stream, settings: Settings) -> StreamTarget:
    (target,) = select_streams(settings, [_key(source, stream)])
    return target


# A served record, and the columns the run fills from outside it (a partitioned stream's key).
Served = list[tuple[dict[str, Any], dict[str, Any]]]


async def _served(target: StreamTarget) -> Served:
    """Every record the simulator serves for the stream, walked with the stream's own
    paginator (each parent's, for a partitioned stream), as the runner reads it."""
    stream, size = target.stream, target.stream.page_size(target.settings)
    async with build_client(target.source, target.config) as client:

        async def walk(s: Stream, path: str, parent: str | None = None) -> list[Any]:
            paginator = s.paginator(size)
            form = {k: v.format(parent=parent) for k, v in (s.form or {}).items()}

            async def fetch(params: Mapping[str, str], headers: Mapping[str, str]) -> JsonResponse:
                return await client.request(
                    s.method,
                    path,
                    params={**target.filter_params, **params},
                    headers=headers,
                    form=form if s.form is not None else None,
                    multipart=s.multipart,
                    expect=paginator.check,
                )

            pages = paginator.pages(fetch, start=None, concurrency=client.max_concurrency)
            found = [r async for page in pages for r in page.records]
            return [dig(r, s.record_path) if s.record_path else r for r in found]

        parts = stream.partitions
        if parts is None:
            return [(r, {}) for r in await walk(stream, stream.path)]
        served: Served = []
        for parent in await walk(parts.parent, parts.parent.path):
            key = str(parent[parts.key])
            records = await walk(stream, stream.path.format(parent=quote(key, safe="")), key)
            served += [(r, {parts.column: key}) for r in records]
        return served


async def _walk(source: SourceSpec, stream: Stream, settings: Settings) -> Served:
    return await asyncio.wait_for(_served(_target(source, stream, settings)), SECONDS)


async def _sync(engine: AsyncEngine, settings: Settings, key: str) -> StreamOutcome:
    return (await asyncio.wait_for(sync(engine, settings, key), SECONDS))[key]


def _context(fixed: Mapping[str, Any]) -> dict[str, Any]:
    """What derived columns may read, as the runner gives it (`_StreamRun.context`)."""
    return {"run_date": datetime.now(UTC).date(), **fixed}


def _present(record: Any, path: tuple[str, ...]) -> bool:
    """Whether the record has the field at all (null counts: a field the API sends as null)."""
    for step in path:
        if not isinstance(record, dict) or step not in record:
            return False
        record = record[step]
    return True


def _primary_key(stream: Stream, record: dict[str, Any], fixed: Mapping[str, Any]) -> Any:
    (key,) = convert_record(
        record, [(stream.primary_key, stream.primary_key.source_path)], fixed, _context(fixed)
    )
    return key


# ---- the contract ---------------------------------------------------------------------------


@contract
def test_it_declares_exactly_one_primary_key(source: SourceSpec, stream: Stream) -> None:
    assert [c.name for c in stream.columns if c.primary_key] == [stream.primary_key.name]
    derived = stream.primary_key.derive is not None
    assert derived == bool(_declared(source, stream).derived_key), "a derived key needs its reason"
    if stream.partitions is not None:  # the parent's key is what partitions the child
        parent_key = stream.partitions.parent.primary_key
        assert parent_key.source_path == (stream.partitions.key,)


@contract
async def test_its_walk_ends_and_serves_every_declared_column_and_cursor_path(
    source: SourceSpec, stream: Stream
) -> None:
    async with serve(_small(source)) as running:
        served = await _walk(source, stream, _settings(source, stream, running))
    assert served, "the simulator served no record: the contract would check nothing"
    records = [{**fixed, **record} for record, fixed in served]  # partition columns are filled
    unserved = _declared(source, stream).unserved
    missing = [
        c.name
        for c in stream.columns
        if c.derive is None
        and c.name not in unserved
        and not any(_present(r, c.source_path) for r in records)
    ]
    assert missing == [], f"declared columns no served record has: {missing}"
    cursor_paths = stream.cursor.paths if stream.cursor else ()
    no_cursor = [
        p for p in cursor_paths if not any(_present(r, tuple(p.split("."))) for r in records)
    ]
    assert no_cursor == [], f"cursor paths no served record has: {no_cursor}"
    for name in unserved:  # a documented gap that closes should leave the declaration
        column = next(c for c in stream.columns if c.name == name)
        assert not any(dig(r, column.source_path) is not None for r in records), name


@contract
async def test_every_served_record_converts_through_the_declared_types(
    source: SourceSpec, stream: Stream
) -> None:
    async with serve(_small(source)) as running:
        served = await _walk(source, stream, _settings(source, stream, running))
    columns = [(c, c.source_path) for c in stream.columns]
    children = [(child, [(c, c.source_path) for c in child.columns]) for child in stream.children]
    keys = []
    for record, fixed in served:
        assert isinstance(record, dict)
        values = convert_record(
            record, columns, fixed, _context(fixed)
        )  # ValueError names the field
        keys.append(values[stream.columns.index(stream.primary_key)])
        if stream.cursor is not None:
            stream.cursor.value(record)
        for child, child_columns in children:
            child_rows(keys[-1], record, child, child_columns)
    assert None not in keys, "a served record without a primary key"
    seen: dict[Any, dict[str, Any]] = {}
    for key, (record, _) in zip(keys, served, strict=True):
        # Seeking by value reads records sharing the last second again: the same record twice.
        assert seen.setdefault(key, record) == record, f"two served records share key {key!r}"


@contract
async def test_a_sync_stores_what_the_simulator_holds_and_a_quiet_one_writes_nothing(
    engine: AsyncEngine, source: SourceSpec, stream: Stream
) -> None:
    key = _key(source, stream)
    async with serve(_small(source)) as running:
        settings = _settings(source, stream, running)
        first = await _sync(engine, settings, key)
        held = _declared(source, stream).records(running.sim)
        served = await _walk(source, stream, settings)
        quiet = await _sync(engine, settings, key)
    assert first.status == "succeeded", first.error
    assert first.totals.quarantined == 0
    stored = await _stored_keys(engine, source, stream)
    assert len(stored) == len(held)
    assert stored == {_primary_key(stream, r, fixed) for r, fixed in served}
    assert quiet.status == "succeeded", quiet.error
    assert (quiet.totals.inserted, quiet.totals.updated, quiet.deleted) == (0, 0, 0)


async def _stored_keys(engine: AsyncEngine, source: SourceSpec, stream: Stream) -> set[Any]:
    table, key = f"{source.schema}.{stream.name}", stream.primary_key.name
    return {
        row[0] for row in await rows(engine, f"SELECT {key} FROM {table} WHERE _deleted_at IS NULL")
    }


@contract
async def test_a_removed_record_answers_404_and_is_marked_deleted(
    engine: AsyncEngine, source: SourceSpec, stream: Stream
) -> None:
    key = _key(source, stream)
    removal = _declared(source, stream).removal
    marked_by = removal.marked_by
    if marked_by is None or removal.mutate is None:
        pytest.skip(f"{key}: {removal.why}")
    async with serve(_small(source)) as running:
        settings = _settings(source, stream, running)
        assert (await _sync(engine, settings, key)).status == "succeeded"
        record, fixed = (await _walk(source, stream, settings))[2]
        victim = _primary_key(stream, record, fixed)
        target = _target(source, stream, settings)
        detail = (
            stream.detail_path.format(id=quote(str(victim), safe=""))
            if stream.detail_path
            else None
        )
        async with build_client(target.source, target.config) as client:
            if detail is not None:
                await client.get(detail)  # alive: the path is right, so a 404 will mean gone
            fields = {**record, **fixed}
            running.sim.mutate({k: v.format(**fields) for k, v in removal.mutate.items()})
            if detail is not None:
                with pytest.raises(NotFound):
                    await client.get(detail)
        outcomes = [await _sync(engine, settings, key)]
        if marked_by == "second sync":
            outcomes.append(await _sync(engine, settings, key))
        elif marked_by == "reconcile":
            reconcile = Runner(engine, mode=Mode(kind="reconcile"))
            outcomes += await asyncio.wait_for(reconcile.run([target]), SECONDS)
    assert all(o.status == "succeeded" for o in outcomes), [o.error for o in outcomes]
    assert [o.deleted for o in outcomes] == [0] * (len(outcomes) - 1) + [1], marked_by
    table, column = f"{source.schema}.{stream.name}", stream.primary_key.name
    deleted_at = await scalar(
        engine, f"SELECT _deleted_at FROM {table} WHERE {column} = :key", key=victim
    )
    assert deleted_at is not None


@pytest.mark.redteam
@contract
async def test_a_source_that_suddenly_lists_a_few_of_its_records_deletes_nothing_until_confirmed(
    engine: AsyncEngine, source: SourceSpec, stream: Stream
) -> None:
    """Finding 9 (mass deletion with no guard): every record but one removed at the source, the
    run that would mark them deleted holds them back instead (`held`, exit code 5); a
    `reconcile --confirm-deletes` then applies them."""
    key = _key(source, stream)
    removal = _declared(source, stream).removal
    if removal.marked_by is None or removal.mutate is None:
        pytest.skip(f"{key}: {removal.why}")
    async with serve(_small(source)) as running:
        settings = _settings(source, stream, running)
        assert (await _sync(engine, settings, key)).status == "succeeded"
        # Seeking by value serves a second's records twice: one of each.
        served = list(
            {
                _primary_key(stream, r, f): (r, f) for r, f in await _walk(source, stream, settings)
            }.items()
        )
        for _, (record, fixed) in served[1:]:
            fields = {**record, **fixed}
            running.sim.mutate({k: v.format(**fields) for k, v in removal.mutate.items()})
        gone = {k for k, _ in served[1:]}
        outcomes = [await _sync(engine, settings, key)]
        if removal.marked_by == "second sync":
            outcomes.append(await _sync(engine, settings, key))
        elif removal.marked_by == "reconcile":
            reconcile = Runner(engine, mode=Mode(kind="reconcile"))
            outcomes += await asyncio.wait_for(
                reconcile.run([_target(source, stream, settings)]), SECONDS
            )
        last = outcomes[-1]
        assert last.status == "held", (last.status, last.error)
        assert last.held_deletes + last.deleted == len(gone) and last.held_deletes >= 2
        assert "--confirm-deletes" in (last.error or "")
        assert exits.for_outcomes([last]) == exits.HELD
        assert gone - await _stored_keys(engine, source, stream) <= set(
            await _deleted_keys(engine, source, stream)
        )
        confirmed = Runner(engine, mode=Mode(kind="reconcile", confirm_deletes=True))
        [applied] = await asyncio.wait_for(
            confirmed.run([_target(source, stream, settings)]), SECONDS
        )
    assert applied.status == "succeeded", applied.error
    assert gone <= set(await _deleted_keys(engine, source, stream))
    assert len(await _stored_keys(engine, source, stream)) == len(served) - len(gone)


async def _deleted_keys(engine: AsyncEngine, source: SourceSpec, stream: Stream) -> set[Any]:
    table, key = f"{source.schema}.{stream.name}", stream.primary_key.name
    found = await rows(engine, f"SELECT {key} FROM {table} WHERE _deleted_at IS NOT NULL")
    return {row[0] for row in found}
