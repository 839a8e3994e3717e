"""Streams and sources are declared as data: endpoint, paginator, key, cursor, columns.

A source module lists facts; the runner, the loader and the table definitions read them. Adding
a stream of a known paging style is one declaration and one migration, no new control flow.

Two incremental strategies exist, because the APIs allow only two honest ones:
- `FULL_SCAN`: the API cannot filter or sort by time. Every run reads every page (concurrently
  where the page count is known); what is *written* is decided by content, so a quiet run writes
  nothing; the watermark only records the high-water mark, committed after a complete scan and
  never past the run's start; a complete scan is also what detects hard deletes.
- `SORTED_FILTER`: the API filters `cursor >= watermark` and sorts by it. Pages come in cursor
  order, so the checkpoint is committed with each page and a crash resumes where it stopped.
"""

from __future__ import annotations

import enum
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pipeline.records import dig, parse_timestamp
from pipeline.settings import SourceSettings, StreamSettings

if TYPE_CHECKING:
    from pipeline.extract.auth import Auth
    from pipeline.extract.paginators import Paginator


class Incremental(enum.Enum):
    FULL_SCAN = "full_scan"
    SORTED_FILTER = "sorted_filter"


class Deletions(enum.Enum):
    """What a complete scan's silence about a stored row means."""

    CONFIRMED = "confirmed"  # a paged list can hide rows by drift: 404 on detail, or 2 scans
    SNAPSHOT = "snapshot"  # one response holds the whole set: absent once is gone
    NEVER = "never"  # history rows (one per day read): nothing is ever deleted


# ---------------------------------------------------------------------------------------------
# Column types: the SQL type, and the conversion of a JSON value into what COPY needs.
# A conversion raises ValueError with a short reason; the record then goes to quarantine.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    sql: Callable[[], sa.types.TypeEngine[Any]]
    convert: Callable[[Any], Any]
    label: str


def _shown(value: Any) -> str:
    """A value for a quarantine reason: short, and depth-limited (a record's JSON may nest
    1,000 levels deep, and repr() recurses as deep)."""
    return reprlib.repr(value)[:80]


def _text(value: Any) -> str:
    if type(value) is str:  # the common case first: a plain string
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _bigint(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError("integer out of range")
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return _bigint(int(value))
    raise ValueError(f"expected an integer, got {_shown(value)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"expected a boolean, got {_shown(value)}")


def _date(value: Any) -> date:
    if not isinstance(value, str):
        raise ValueError(f"expected a YYYY-MM-DD date string, got {type(value).__name__}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a YYYY-MM-DD date: {value!r}"[:80]) from None


def _numeric(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, dict | list):  # str() of one recurses as deep as it nests
        raise ValueError(f"expected a number, got {type(value).__name__}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}"[:80]) from None


TEXT = ColumnType(sa.Text, _text, "text")
BIGINT = ColumnType(sa.BigInteger, _bigint, "bigint")
BOOLEAN = ColumnType(sa.Boolean, _boolean, "boolean")
TIMESTAMPTZ = ColumnType(lambda: sa.DateTime(timezone=True), parse_timestamp, "timestamptz")
DATE = ColumnType(sa.Date, _date, "date")
NUMERIC = ColumnType(sa.Numeric, _numeric, "numeric")


def _text_array(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {type(value).__name__}")
    return [_text(item) for item in value]


def _jsonb(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # nested past orjson's 254 levels
        raise ValueError(f"cannot be stored as jsonb ({exc})") from None


JSONB = ColumnType(pg.JSONB, _jsonb, "jsonb")
TEXT_ARRAY = ColumnType(lambda: pg.ARRAY(sa.Text), _text_array, "text[]")


def _bigint_array(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of integers, got {type(value).__name__}")
    return [_bigint(item) for item in value]


def _date_ddmmyyyy(value: Any) -> date:
    """DDMMYYYY, sometimes typed as an integer upstream (so a leading zero may be lost)."""
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not text.isdigit() or len(text) not in (7, 8):
        raise ValueError(f"not a DDMMYYYY date: {value!r}"[:80])
    text = text.zfill(8)
    try:
        return date(int(text[4:]), int(text[2:4]), int(text[:2]))
    except ValueError:
        raise ValueError(f"not a DDMMYYYY date: {value!r}"[:80]) from None


BIGINT_ARRAY = ColumnType(lambda: pg.ARRAY(sa.BigInteger), _bigint_array, "bigint[]")
DATE_DDMMYYYY = ColumnType(sa.Date, _date_ddmmyyyy, "date")


@dataclass(frozen=True)
class Column:
    """A typed column filled from a (dotted) path in the record; `path` defaults to `name`.

    `derive` computes the value instead, from the record and the run's context (the partition
    key, the run's date): for keys the API does not send, such as one row per day read."""

    name: str
    type: ColumnType
    path: str | None = None
    primary_key: bool = False
    index: bool = False
    derive: Callable[[dict[str, Any], Mapping[str, Any]], Any] | None = None

    @property
    def source_path(self) -> tuple[str, ...]:
        return tuple((self.path or self.name).split("."))


@dataclass(frozen=True)
class Cursor:
    """The record's change time: the latest of the given paths (each an ISO-8601 timestamp)."""

    paths: tuple[str, ...]

    def value(self, record: dict[str, Any]) -> datetime | None:
        """Raises ValueError when a present value does not parse; None when all are absent."""
        latest: datetime | None = None
        for path in self.paths:
            raw = dig(record, path.split("."))
            if raw is None:
                continue
            parsed = parse_timestamp(raw)
            if latest is None or parsed > latest:
                latest = parsed
        return latest


@dataclass(frozen=True)
class ChildTable:
    """An array inside each record kept as its own table, one row per element, so analysts can
    join on it (parcel items, price VAT lines). It is replaced together with its parent row, in
    the parent's transaction: elements removed at the source disappear."""

    name: str
    path: str
    parent_column: str
    columns: tuple[Column, ...]
    description: str = ""

    @property
    def source_path(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))


@dataclass(frozen=True)
class Partitions:
    """A parent list whose every record scopes a child list (Afosto price groups -> prices).

    The parent is loaded into its own table first; then each parent's children are scanned as
    a unit whose completion is checkpointed, so a crash resumes at the next parent. The child
    stream's `path` holds `{parent}`, filled from the parent record's `key` field, and the
    child's `column` is set to that key on every child row."""

    parent: Stream
    column: str
    key: str = "id"


@dataclass(frozen=True)
class Filter:
    """An optional server-side filter set in the stream's settings: sent as a query parameter,
    part of the stream's state key, and the scope in which absences mean deletions."""

    setting: str
    param: str
    # SQL condition on the table (alias t) matching the rows the filtered list returns; `{}` is
    # the parameter placeholder.
    condition: str


@dataclass(frozen=True)
class Stream:
    """One table's worth of records from one endpoint."""

    name: str
    path: str
    paginator: Callable[[int], Paginator]
    columns: tuple[Column, ...]
    incremental: Incremental
    cursor: Cursor | None = None
    detail_path: str | None = None
    # False when the detail endpoint answers another shape than the list (Afosto shipments):
    # then a detail answer only proves the record alive; it is not stored.
    detail_matches_list: bool = True
    default_page_size: int = 100
    max_page_size: int | None = None
    settings_model: type[StreamSettings] = StreamSettings
    description: str = ""
    children: tuple[ChildTable, ...] = ()
    partitions: Partitions | None = None
    deletions: Deletions = Deletions.CONFIRMED
    # Each list element holds the record under this path (Sparkfly: {"credential": {...}}).
    record_path: tuple[str, ...] = ()
    # POST-form endpoints (DigiLocker): form fields (`{parent}` is the partition key).
    method: str = "GET"
    form: Mapping[str, str] | None = None
    multipart: bool = False
    filters: tuple[Filter, ...] = ()
    # How to list every record for a reconcile, when the normal walk only reads what changed.
    reconcile_paginator: Callable[[int], Paginator] | None = None

    def __post_init__(self) -> None:
        keys = [c for c in self.columns if c.primary_key]
        if len(keys) != 1:
            raise ValueError(f"stream {self.name}: declare exactly one primary key column")
        if self.incremental is Incremental.SORTED_FILTER and self.cursor is None:
            raise ValueError(f"stream {self.name}: a sorted-filter stream needs a cursor")
        if self.partitions is not None:
            templates = [self.path, *(self.form or {}).values()]
            if not any("{parent}" in t for t in templates):
                raise ValueError(f"stream {self.name}: a partitioned request needs {{parent}}")
            if self.partitions.column not in {c.name for c in self.columns}:
                raise ValueError(f"stream {self.name}: no column {self.partitions.column}")

    @property
    def primary_key(self) -> Column:
        return next(c for c in self.columns if c.primary_key)

    def page_size(self, settings: StreamSettings) -> int:
        return settings.page_size or self.default_page_size


@dataclass(frozen=True)
class SourceSpec:
    """A source system: its settings, how it authenticates, where its API lives, its streams."""

    name: str
    title: str
    settings_model: type[SourceSettings]
    make_auth: Callable[[Any], Auth]
    streams: tuple[Stream, ...]
    api_root: Callable[[Any], str] = field(default=lambda settings: settings.base_url)

    def stream(self, name: str) -> Stream | None:
        return next((s for s in self.streams if s.name == name), None)

    @property
    def schema(self) -> str:
        return self.name
