"""One contract, run against every declared stream and its real simulator.

The streams come from `pipeline.sources.SOURCES`, so a new stream is held to the contract the
day it is declared: it has one primary key; its columns and cursor are fields the simulator
really serves; every served record converts through the declared types; its walk ends; a sync
stores exactly what the simulator holds and a quiet re-sync writes nothing; a record removed at
the source answers 404 on the detail endpoint (where there is one) and is marked deleted.

What differs between the simulators (how to build a small one, what it holds for a stream, how
to remove a record) is data in the tables below, not code paths. So are the contract points a
stream cannot meet, each with its documented reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.config import Settings
from pipeline.errors import NotFound
from pipeline.extract.http import JsonResponse
from pipeline.load import child_rows, convert_record
from pipeline.run import Mode, Runner, StreamOutcome
from pipeline.sandbox import (
    AfostoSimulator,
    DigiLockerSimulator,
    RunningSimulator,
    Simulator,
    SohoSimulator,
    SparkflySimulator,
    ValomniaSimulator,
    serve,
)
from pipeline.sources import SOURCES
from pipeline.streams import SourceSpec, Stream, dig
from pipeline.targets import StreamTarget, build_client, select_streams
from tests.helpers import make_settings, rows, scalar, sync

# A small simulator per source. Afosto serves the contacts' created/updated/deleted_at, which
# its schema declares and no example renders ([inferred], SOURCES.md §1.6), so that their
# columns are checked too.
SIMULATORS: dict[str, Callable[[], Simulator]] = {
    "afosto": lambda: AfostoSimulator(
        contacts=25,
        shipments=30,
        parcels=35,
        groups=3,
        prices_per_group=10,
        contacts_have_updated_at=True,
        seed=41,
    ),
    "digilocker": lambda: DigiLockerSimulator(issuers=6, seed=42),
    "soho": lambda: SohoSimulator(customers=40, seed=43),
    "sparkfly": lambda: SparkflySimulator(credentials=40, seed=44),
    "valomnia": lambda: ValomniaSimulator(authorities=45, seed=45),
}

# What a simulator holds for a stream: the arguments of its `truth()` (default: none).
HOLDS: dict[str, tuple[str, ...]] = {
    "afosto.contacts": ("contacts",),
    "afosto.shipments": ("shipments",),
    "afosto.parcels": ("parcels",),
    "afosto.prices": ("prices",),
    "digilocker.issuers": ("issuers",),
    "digilocker.doctypes": ("doctypes",),
    "digilocker.statistics": ("statistics",),
}

# How a record is removed at the simulator: its `mutate` spec, `{field}` taken from the record
# (or from the partition it was read under). Afosto's delete_price is a test-only operation.
REMOVE: dict[str, dict[str, str]] = {
    "afosto.contacts": {"op": "delete_contact", "id": "{id}"},
    "afosto.shipments": {"op": "delete_shipment", "id": "{id}"},
    "afosto.parcels": {"op": "delete_parcel", "id": "{id}"},
    "afosto.prices": {"op": "delete_price", "id": "{id}"},
    "digilocker.issuers": {"op": "remove_issuer", "orgid": "{orgid}"},
    "digilocker.doctypes": {"op": "remove_doctype", "orgid": "{orgid}", "doctype": "{doctype}"},
    "soho.customers": {"op": "delete", "id": "{id}"},
    "sparkfly.credentials": {"op": "delete", "id": "{id}"},
    "valomnia.authorities": {"op": "delete", "id": "{id}"},
}

# Primary keys that are not a field of the record, and why (each is derived by the run).
DERIVED_KEYS: dict[str, str] = {
    "digilocker.doctypes": "a doctype code is unique only within its issuer: orgid/doctype, the "
    "orgid being the partition the list was read for (SOURCES.md §5.3)",
    "digilocker.statistics": "the counts object has no identity of its own: one row per (UTC) "
    "day it was read, keyed by that date",
}

# Declared columns the simulator never fills, and why.
UNSERVED_COLUMNS: dict[str, dict[str, str]] = {
    "afosto.shipments": {
        "order_id": "only the shipment detail (LcsShipment) has it; the list shape the stream "
        "reads (LcsListedShipment, SOURCES.md §1.6) does not, so the column stays NULL",
    },
}

# Streams where a removed record is not marked deleted by the next sync: (what does, why).
REMOVAL: dict[str, tuple[str | None, str]] = {
    "afosto.prices": (
        "second sync",
        "no detail endpoint to ask: absence from two complete scans confirms (DESIGN.md §3.4)",
    ),
    "valomnia.authorities": (
        "reconcile",
        "a sync reads only what changed since the watermark (lastUpdated_gte) and the list "
        "carries no delete signal; a reconcile lists every id (SOURCES.md §4.4)",
    ),
    "digilocker.statistics": (
        None,
        "one row per day read, kept as history (Deletions.NEVER); there is nothing to remove",
    ),
}

PAGE_SIZE = 7  # small, so that the small simulators are walked over several pages
SECONDS = 30.0  # far more than any walk or sync here needs: one that does not end fails

STREAMS = [
    pytest.param(source, stream, id=f"{source.name}.{stream.name}")
    for source in SOURCES.values()
    for stream in source.streams
]
contract = pytest.mark.parametrize(("source", "stream"), STREAMS)


def _key(source: SourceSpec, stream: Stream) -> str:
    return f"{source.name}.{stream.name}"


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
    assert derived == (_key(source, stream) in DERIVED_KEYS), "a derived key needs its reason"
    if stream.partitions is not None:  # the parent's key is what partitions the child
        parent_key = stream.partitions.parent.primary_key
        assert parent_key.source_path == (stream.partitions.key,)


@contract
async def test_its_walk_ends_and_serves_every_declared_column_and_cursor_path(
    source: SourceSpec, stream: Stream
) -> None:
    async with serve(SIMULATORS[source.name]()) as running:
        served = await _walk(source, stream, _settings(source, stream, running))
    assert served, "the simulator served no record: the contract would check nothing"
    records = [{**fixed, **record} for record, fixed in served]  # partition columns are filled
    unserved = UNSERVED_COLUMNS.get(_key(source, stream), {})
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
    for name in unserved:  # a documented gap that closes should leave this table
        column = next(c for c in stream.columns if c.name == name)
        assert not any(dig(r, column.source_path) is not None for r in records), name


@contract
async def test_every_served_record_converts_through_the_declared_types(
    source: SourceSpec, stream: Stream
) -> None:
    async with serve(SIMULATORS[source.name]()) as running:
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
    async with serve(SIMULATORS[source.name]()) as running:
        settings = _settings(source, stream, running)
        first = await _sync(engine, settings, key)
        held = running.sim.truth(*HOLDS.get(key, ()))  # type: ignore[call-arg]
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
    marked_by, reason = REMOVAL.get(key, ("next sync", ""))
    if marked_by is None:
        pytest.skip(f"{key}: {reason}")
    async with serve(SIMULATORS[source.name]()) as running:
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
            running.sim.mutate({k: v.format(**fields) for k, v in REMOVE[key].items()})
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
