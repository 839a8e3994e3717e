"""The fast paths against a plain reading of the same bytes, on generated hostile data.

The engine keeps records as the bytes the API sent, judges them by stored hashes held in
memory, holds a re-run's few writes into batches, merges waiting pages, COPies new rows
straight in and builds indexes after a first load. Each of those is a way to be wrong that
friendly data never shows. Here every stream kind (raw records, wrapped records, child tables,
partitions, snapshots) is synced three times from a server that sends generated records
byte for byte (`tests.wire`): a first load, a re-run with some records changed, added, removed
or broken, and the same again. After every run its table, child tables and quarantine must
equal what the plain path gives: `orjson.loads` each record, convert each declared column with
its type's converter, keep the newest version of a key, mark what a complete scan no longer
sees, and insert that into a table of the same shape.

PIPELINE_ORACLE_EXAMPLES (default 6 per stream kind) raises the example count.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline import db
from pipeline.config import settings_from_mapping
from pipeline.records import dig
from pipeline.run import Runner
from pipeline.sandbox import serve
from pipeline.sources import SOURCES
from pipeline.streams import ChildTable, Column, Deletions, Stream
from pipeline.targets import select_streams
from tests import hostile, source_limits
from tests.wire import WireSimulator

EXAMPLES = int(os.environ.get("PIPELINE_ORACLE_EXAMPLES", "6"))
# Shrinking a failure re-runs three syncs per attempt and can take many minutes: on request.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("PIPELINE_ORACLE_SHRINK") else []
)
BASE = datetime(2024, 1, 1, tzinfo=UTC)


# ---- the stream kinds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A stream under test and how its source serves it."""

    key: str
    source: dict[str, Any]  # its [sources.<name>] table, less base_url
    base_path: str  # prefix of the API's paths on the server (DigiLocker's /public)
    style: str
    wrapper: str | None = None  # each element wraps the record (Sparkfly)
    partitions: int = 0  # how many parents (price groups, issuers)
    page_size: int | None = 5

    @property
    def stream(self) -> Stream:
        source, name = self.key.split(".")
        found = SOURCES[source].stream(name)
        assert found is not None
        return found


KINDS = [
    Kind("afosto.parcels", {"token": "t"}, "", "header"),  # raw, child table, detail probes
    Kind("soho.customers", {"token": "t"}, "/api/v1", "soho"),  # raw, numbered pages
    Kind("sparkfly.credentials", {"token": "t"}, "", "sparkfly", wrapper="credential"),
    Kind("afosto.prices", {"token": "t"}, "", "header", partitions=2),  # partitions, children
    Kind(
        "digilocker.doctypes",
        {"client_id": "c", "client_secret": "s"},
        "/public",
        "single:documents",
        partitions=2,
        page_size=None,
    ),  # snapshot per parent, derived key
]


# ---- generated records ----------------------------------------------------------------------------


def _timestamps() -> st.SearchStrategy[str]:
    """Valid ISO-8601 with a zone, written the ways APIs write them."""
    forms = ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%S+00:00"]
    return st.builds(
        lambda seconds, form: (BASE + timedelta(seconds=seconds)).strftime(form),
        st.integers(0, 10**8),
        st.sampled_from(forms),
    )


def _good_value(column: Column) -> st.SearchStrategy[Any]:
    return _good_values(column.type.label)


@functools.cache
def _good_values(label: str) -> st.SearchStrategy[Any]:
    """Built once per column type (building is what costs, not drawing)."""
    values: dict[str, st.SearchStrategy[Any]] = {
        "text": hostile.text(allow_nul=False),
        "bigint": st.integers(-(2**63), 2**63 - 1),
        "boolean": st.booleans(),
        "timestamptz": _timestamps(),
        "date": st.dates().map(str),
        "numeric": st.integers(-(10**20), 10**20),
        "jsonb": hostile.json_values(allow_nul=False),
        "text[]": st.lists(hostile.text(allow_nul=False, max_pieces=2), max_size=3),
        "bigint[]": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    }
    return st.none() | values[label]


def _nest(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for step in path[:-1]:
        record = record.setdefault(step, {}) if isinstance(record.get(step), dict | None) else {}
    record[path[-1]] = value


_EXTRAS = st.dictionaries(
    hostile.text(allow_nul=False, max_pieces=2), hostile.json_values(allow_nul=False), max_size=2
)


@st.composite
def _body(draw: st.DrawFn, columns: tuple[Column, ...], skip: set[str]) -> dict[str, Any]:
    """A record with every declared column's path (some null, some missing) and unknown extras."""
    record: dict[str, Any] = {}
    for column in columns:
        if column.derive is not None or column.name in skip:
            continue
        if draw(st.integers(0, 9)) == 0:
            continue  # missing key
        _nest(record, column.source_path, draw(_good_value(column)))
    extras = draw(_EXTRAS)
    for name, value in extras.items():
        record.setdefault(name, value)
    return record


BREAKS = [
    "no key",
    "bad timestamp",
    "zone-less timestamp",
    "wrong type",
    "real NUL",
    "out of range",
    "not an object",
    "not UTF-8",
    "bad child",
]


@dataclass
class Source:
    """The truth at the source for one run: per list (partition), the records as bytes."""

    lists: dict[str | None, list[bytes]] = field(default_factory=dict)


class Generator:
    """Records of one stream kind, drawn from hypothesis, with ids and change times that
    advance between runs so a changed record is newer than its stored version."""

    def __init__(self, kind: Kind, draw: st.DrawFn) -> None:
        self.kind = kind
        self.stream = kind.stream
        self.draw = draw
        self.rnd = random.Random(draw(st.integers(0, 2**32)))
        self.next_id = 0
        self.clock = BASE

    def key_value(self) -> Any:
        self.next_id += 1
        key = self.stream.primary_key
        if key.derive is not None:  # DigiLocker doctypes: the key is orgid/doctype
            return f"D{self.next_id:04d}"
        if key.type.label == "bigint":
            return self.next_id
        prefix = self.draw(st.sampled_from(["", "id-", "ü/", "a b", "\\u0000", "😀", "../"]))
        return f"{prefix}{self.next_id}"

    def record(self) -> dict[str, Any]:
        stream = self.stream
        skip = {stream.partitions.column} if stream.partitions else set()
        record = self.draw(_body(stream.columns, skip))
        key = stream.primary_key
        if key.derive is not None:
            record["doctype"] = self.key_value()
        else:
            _nest(record, key.source_path, self.key_value())
        self.touch(record)
        for child in stream.children:
            elements = self.draw(st.lists(_body(child.columns, set()), max_size=3))
            _nest(record, child.source_path, elements)
        return record

    def touch(self, record: dict[str, Any]) -> None:
        """A new change time, later than any before (streams with a cursor)."""
        if self.stream.cursor is None:
            return
        self.clock += timedelta(seconds=self.draw(st.integers(1, 10**6)))
        for path in self.stream.cursor.paths:
            steps = tuple(path.split("."))
            if len(steps) == 1 or dig(record, steps[:-1]) is not None:
                _nest(record, steps, self.clock.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def change(self, record: dict[str, Any], value: str) -> None:
        """New content under the same key (a key is never reused for another record)."""
        record["note"] = value
        texts = self.text_columns()
        if texts:
            _nest(record, texts[0].source_path, value)
        self.touch(record)

    def text_columns(self) -> list[Column]:
        own = {self.stream.partitions.column} if self.stream.partitions else set()
        return [
            c
            for c in self.stream.columns
            if c.type.label == "text"
            and not c.primary_key
            and c.derive is None
            and c.name not in own
        ]

    def broken(self, record: dict[str, Any]) -> bytes:
        """One way a record cannot be loaded; the rest of its list must load."""
        how = self.draw(st.sampled_from(BREAKS))
        record = copy.deepcopy(record)
        key = self.stream.primary_key
        time_path = self.stream.cursor.paths[0].split(".") if self.stream.cursor else None
        texts = self.text_columns()
        if how == "no key":
            path = ("doctype",) if key.derive else key.source_path
            dig(record, path[:-1]).pop(path[-1], None) if len(path) > 1 else record.pop(
                path[0], None
            )
        elif how in ("bad timestamp", "zone-less timestamp") and time_path:
            _nest(
                record,
                tuple(time_path),
                "last Tuesday" if how == "bad timestamp" else "2024-03-01T10:00:00",
            )
        elif how == "real NUL" and texts:
            _nest(record, texts[0].source_path, "nul\x00here")
        elif how == "out of range":
            record["__big"] = None
            ints = [
                c for c in self.stream.columns if c.type.label == "bigint" and not c.primary_key
            ]
            if ints:
                _nest(record, ints[0].source_path, 2**63)
            else:
                _nest(record, (key.source_path if not key.derive else ("doctype",)), {"nested": 1})
        elif how == "not an object":
            return self.encode(self.draw(st.sampled_from([[1, 2], "text", 7, None])))
        elif how == "not UTF-8":
            wire = self.encode(record)
            return wire.replace(b"{", b'{"bad":"\xff\xfe",', 1)
        elif how == "bad child" and self.stream.children:
            _nest(record, self.stream.children[0].source_path, [1, "two"])
        else:  # wrong type
            _nest(record, (key.source_path if not key.derive else ("doctype",)), {"nested": [1]})
        return self.encode(record)

    def encode(self, record: Any) -> bytes:
        if self.kind.wrapper:
            record = {self.kind.wrapper: record, "links": []}
        return hostile.json_bytes(record, self.rnd)


# ---- the plain path -----------------------------------------------------------------------------------


@dataclass
class Row:
    values: list[Any]
    data: str
    cursor: datetime | None
    children: list[list[tuple[Any, ...]]]
    absent: int = 0
    deleted: bool = False


class Plain:
    """The reference: what a loader that reads each record plainly would store."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.rows: dict[Any, Row] = {}
        self.min_absent = 1 if stream.deletions is Deletions.SNAPSHOT else 2
        self.probes = stream.detail_path is not None

    def read(self, wire: bytes, context: dict[str, Any]) -> tuple[Any, Any]:
        """(key, (record, cursor)) of a record with a usable key and change time; (key or
        None, None) of one to quarantine at once."""
        stream = self.stream
        try:
            record = orjson.loads(wire)
        except orjson.JSONDecodeError:
            return None, None
        if stream.record_path:
            record = dig(record, stream.record_path)
        if not isinstance(record, dict):
            return None, None
        column = stream.primary_key
        raw = column.derive(record, context) if column.derive else dig(record, column.source_path)
        try:
            key = None if raw is None else column.type.convert(raw)
        except ValueError:
            key = None
        if key is None:
            return None, None
        try:
            cursor = stream.cursor.value(record) if stream.cursor else None
        except ValueError:
            return key, None
        return key, (record, cursor)

    def typed(
        self,
        key: Any,
        record: dict[str, Any],
        cursor: Any,
        wire: bytes,
        context: dict[str, Any],
        fixed: dict[str, Any],
    ) -> Row | None:
        """The row of the version kept for a key; None: it goes to quarantine."""
        stream = self.stream
        try:
            if hostile.holds_nul(record):
                raise ValueError("NUL")
            values = [self._value(c, record, context, fixed) for c in stream.columns]
            children = [self._children(key, record, child) for child in stream.children]
        except ValueError:
            return None
        return Row(values, self._data(record, wire), cursor, children)

    def _data(self, record: dict[str, Any], wire: bytes) -> str:
        return orjson.dumps(record).decode() if self.stream.record_path else wire.decode()

    @staticmethod
    def _value(
        column: Column, record: dict[str, Any], context: dict[str, Any], fixed: dict[str, Any]
    ) -> Any:
        if column.name in fixed:
            return fixed[column.name]
        value = column.derive(record, context) if column.derive else dig(record, column.source_path)
        return None if value is None else column.type.convert(value)

    def _children(
        self, key: Any, record: dict[str, Any], child: ChildTable
    ) -> list[tuple[Any, ...]]:
        elements = dig(record, child.source_path)
        if elements is None:
            return []
        if isinstance(elements, dict):
            elements = [elements]
        if not isinstance(elements, list) or not all(isinstance(e, dict) for e in elements):
            raise ValueError("bad child")
        return [
            (key, position, *(self._value(c, e, {}, {}) for c in child.columns))
            for position, e in enumerate(elements)
        ]

    def scan(self, wires: list[bytes], context: dict[str, Any], fixed: dict[str, Any]) -> list[Any]:
        """One complete scan of one list; returns the keys of the records quarantined."""
        quarantined, seen, newest = [], set(), {}
        for wire in wires:
            key, version = self.read(wire, context)
            if key is not None:
                seen.add(key)
            if version is None:
                quarantined.append(key)
                continue
            kept = newest.get(key)  # the newer of two versions of a key; the later on a tie
            if kept is None or kept[1] is None or version[1] is None or version[1] >= kept[1]:
                newest[key] = (*version, wire)
        for key, (record, cursor, wire) in newest.items():
            stored = self.rows.get(key)
            if stored is not None and not (
                stored.cursor is None or cursor is None or cursor >= stored.cursor
            ):
                continue  # an older version never overwrites a newer one
            if (
                stored is not None
                and not stored.deleted
                and not stored.absent
                and stored.data == self._data(record, wire)
            ):
                continue  # unchanged: not typed again
            row = self.typed(key, record, cursor, wire, context, fixed)
            if row is None:
                quarantined.append(key)
            else:
                self.rows[key] = row
        in_scope = [
            k
            for k, r in self.rows.items()
            if all(r.values[self._index(c)] == v for c, v in fixed.items())
        ]
        for key in in_scope:
            row = self.rows[key]
            if row.deleted or key in seen:
                continue
            row.absent += 1
            row.deleted = self.probes or row.absent >= self.min_absent
        return quarantined

    def _index(self, column: str) -> int:
        return [c.name for c in self.stream.columns].index(column)


# ---- running both and comparing ---------------------------------------------------------------------


def _tables(stream: Stream, schema: str) -> list[tuple[str, list[str]]]:
    own = [c.name for c in stream.columns] + ["data", "_cursor"]
    return [(f"{schema}.{stream.name}", own)] + [
        (
            f"{schema}.{child.name}",
            [child.parent_column, "position", *(c.name for c in child.columns)],
        )
        for child in stream.children
    ]


async def _reference_tables(conn: asyncpg.Connection, stream: Stream, schema: str) -> None:
    for table, columns in _tables(stream, schema):
        name = "oracle_" + table.split(".")[1]
        extra = ", false AS deleted, 0 AS absent" if table.endswith(f".{stream.name}") else ""
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} AS SELECT {', '.join(columns)}{extra} "
            f"FROM {table} WITH NO DATA"
        )
        await conn.execute(f"TRUNCATE {name}")


async def _write_reference(
    conn: asyncpg.Connection, stream: Stream, schema: str, plain: Plain
) -> None:
    (_table, columns), *children = _tables(stream, schema)
    name = "oracle_" + stream.name
    await conn.execute(f"TRUNCATE {name}")
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 3))
    await conn.executemany(
        f"INSERT INTO {name} ({', '.join(columns)}, deleted, absent) VALUES ({marks})",
        [(*r.values, r.data, r.cursor, r.deleted, r.absent) for r in plain.rows.values()],
    )
    for index, (child_table, child_columns) in enumerate(children):
        child_name = "oracle_" + child_table.split(".")[1]
        await conn.execute(f"TRUNCATE {child_name}")
        marks = ", ".join(f"${i}" for i in range(1, len(child_columns) + 1))
        await conn.executemany(
            f"INSERT INTO {child_name} VALUES ({marks})",
            [row for r in plain.rows.values() for row in r.children[index]],
        )


async def _differences(conn: asyncpg.Connection, stream: Stream, schema: str) -> list[str]:
    out = []
    for index, (table, columns) in enumerate(_tables(stream, schema)):
        name = "oracle_" + table.split(".")[1]
        cols = ", ".join(columns)
        engine_cols, ref_cols = cols, cols
        if index == 0:
            engine_cols += ", _deleted_at IS NOT NULL, _absent_scans"
            ref_cols += ", deleted, absent"
        for label, a, b in (
            ("engine only", f"SELECT {engine_cols} FROM {table}", f"SELECT {ref_cols} FROM {name}"),
            ("plain only", f"SELECT {ref_cols} FROM {name}", f"SELECT {engine_cols} FROM {table}"),
        ):
            rows = await conn.fetch(f"({a}) EXCEPT ALL ({b}) LIMIT 3")
            out += [f"{table} {label}: {dict(r)}"[:600] for r in rows]
    return out


def _serve(sim: WireSimulator, kind: Kind, truth: Source, parents: list[Any]) -> None:
    stream = kind.stream
    if stream.partitions is None:
        sim.serve_list(kind.base_path + stream.path, kind.style, truth.lists[None])
        return
    parent = stream.partitions.parent
    if kind.style.startswith("single:"):
        sim.serve_list(
            kind.base_path + parent.path,
            "single:issuers",
            [orjson.dumps({parent.primary_key.name: p}) for p in parents],
        )
        for p in parents:
            sim.serve_list(kind.base_path + stream.path, kind.style, truth.lists[p], form_key=p)
        return
    sim.serve_list(
        kind.base_path + parent.path,
        kind.style,
        [
            orjson.dumps({"id": p, "name": f"group {p}", "updated_at": "2024-01-01T00:00:00Z"})
            for p in parents
        ],
    )
    for p in parents:
        sim.serve_list(kind.base_path + stream.path.format(parent=p), kind.style, truth.lists[p])


@st.composite
def scenarios(draw: st.DrawFn, kind: Kind) -> tuple[list[Any], list[Source]]:
    """Three runs' truths: a first one, one with changes and breakage, the same again."""
    gen = Generator(kind, draw)
    parents = [f"P{i}" for i in range(kind.partitions)] if kind.partitions else [None]
    first, second = Source(), Source()
    for parent in parents:
        records = [gen.record() for _ in range(draw(st.integers(0, 25)))]
        wires = [gen.encode(r) for r in records]
        broken = [gen.broken(gen.record()) for _ in range(draw(st.integers(0, 2)))]
        first.lists[parent] = _shuffled_in(draw, wires, broken)
        # The next run: most records as they were (byte for byte), some changed, removed,
        # duplicated on the spot or broken; new ones and more broken ones.
        later = []
        for record, wire in zip(records, wires, strict=True):
            fate = draw(st.sampled_from(["same"] * 6 + ["changed", "gone", "broken", "twice"]))
            if fate == "same":
                later.append(wire)
            elif fate == "changed":
                gen.change(record, draw(hostile.text(allow_nul=False, max_pieces=3)))
                later.append(gen.encode(record))
            elif fate == "broken":
                later.append(gen.broken(record))
            elif fate == "twice":
                later += [wire, wire]
        later += [gen.encode(gen.record()) for _ in range(draw(st.integers(0, 3)))]
        later += [gen.broken(gen.record()) for _ in range(draw(st.integers(0, 3)))]
        second.lists[parent] = later
    return parents, [first, second, second]


def _shuffled_in(draw: st.DrawFn, wires: list[bytes], extra: list[bytes]) -> list[bytes]:
    out = list(wires)
    for item in extra:
        out.insert(draw(st.integers(0, len(out))), item)
    return out


class Database:
    """One migrated database per test, emptied between examples, on the test's own loop."""

    def __init__(self, server_url: str, template: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.server_url = server_url
        self.name = f"pipeline_oracle_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = self.loop.run_until_complete(
            db.recreate_database(server_url, self.name, template=template)
        )
        self.engine = db.create_engine(self.url, pool_size=4)

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.run_until_complete(db.drop_database(self.server_url, self.name))
        self.loop.close()


@pytest.fixture
def database(pg_server_url: str, template_database: str) -> Iterator[Database]:
    database = Database(pg_server_url, template_database)
    yield database
    database.close()


async def _check(database: Database, kind: Kind, parents: list[Any], runs: list[Source]) -> None:
    stream = kind.stream
    source_name = kind.key.split(".")[0]
    plain = Plain(stream)
    conn = await asyncpg.connect(db.plain_url(database.url))
    try:
        await conn.execute(
            f"TRUNCATE {source_name}.{stream.name}, pipeline.stream_state, pipeline.sync_runs, pipeline.quarantine"
            + "".join(f", {source_name}.{c.name}" for c in stream.children)
            + (
                f", {source_name}.{stream.partitions.parent.name}"
                if stream.partitions
                and stream.partitions.parent not in SOURCES[source_name].streams
                else ""
            )
        )
        await _reference_tables(conn, stream, source_name)
        sim = WireSimulator()
        async with serve(sim) as running:
            table = {
                **kind.source,
                "base_url": running.url + kind.base_path,
                "backoff_seconds": 0.01,
                "max_retries": 1,
            }
            # Every deletion the plain reading finds is expected: the mass-deletion guard, which
            # would hold some back, has tests of its own (tests/redteam/test_mass_deletion.py).
            stream_table: dict[str, Any] = {"max_delete_fraction": 1.0}
            if kind.page_size:
                stream_table["page_size"] = kind.page_size
            table["streams"] = {stream.name: stream_table}
            config = settings_from_mapping(
                {"sources": {source_name: table}}, {}, SOURCES, label="(oracle)"
            )
            source_limits.expect_settings(config, {source_name: running})
            targets = select_streams(config, [kind.key])
            for number, truth in enumerate(runs, 1):
                _serve(sim, kind, truth, parents)
                run_id = uuid.uuid4()
                [outcome] = await Runner(database.engine, run_id=run_id).run(targets)
                assert outcome.status == "succeeded", outcome.error
                expected_quarantine: list[Any] = []
                for parent in parents:
                    fixed = {stream.partitions.column: parent} if stream.partitions else {}
                    context = {"orgid": parent} if parent is not None else {}
                    expected_quarantine += plain.scan(truth.lists[parent], context, fixed)
                await _write_reference(conn, stream, source_name, plain)
                differences = await _differences(conn, stream, source_name)
                assert not differences, f"run {number}:\n" + "\n".join(differences)
                quarantined = await conn.fetch(
                    "SELECT record_key FROM pipeline.quarantine WHERE run_id = $1", run_id
                )
                assert sorted(map(repr, (r["record_key"] for r in quarantined))) == sorted(
                    repr(None if k is None else str(k)) for k in expected_quarantine
                ), f"run {number}: quarantine"
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", KINDS, ids=[k.key for k in KINDS])
def test_the_engine_stores_what_a_plain_reading_of_the_same_bytes_gives(
    database: Database, kind: Kind
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=PHASES,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(scenario=scenarios(kind))
    def check(scenario: tuple[list[Any], list[Source]]) -> None:
        parents, runs = scenario
        database.loop.run_until_complete(_check(database, kind, parents, runs))

    check()
