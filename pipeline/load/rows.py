"""Typing: a record's declared columns as the values COPY needs, and its child tables' rows.

The hot loop of a load is `compile_row_builder`'s generated function; `convert_record` is its
plain twin (one converter call per column), used to name the field that does not fit and, in
the tests, as the oracle the generated code must equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pipeline.records import dig
from pipeline.streams import ChildTable, Column

# Values of these JSON types need no conversion for these column types (the common case).
_ALREADY_RIGHT = {"text": "str", "bigint": "int", "boolean": "bool"}


RowBuilder = Callable[[dict[str, Any], Mapping[str, Any], Mapping[str, Any]], list[Any]]


def compile_row_builder(
    columns: Sequence[tuple[Column, tuple[str, ...]]], fixed: frozenset[str] = frozenset()
) -> RowBuilder:
    """A function typing one record, specialised to the stream's columns and to the columns a
    scan fixes (a partition's value).

    The hot loop of a load: generic code spends most of its time on lookups and calls per
    column, so the column list is turned into straight-line code, with a type check that skips
    the converter when the JSON value already fits, and ISO timestamps parsed in line. Any
    ValueError sends the caller to `convert_record`, which names the offending field.
    """
    lines = ["def build(record, fixed, context):"]
    names: dict[str, Any] = {"dig": dig, "fromisoformat": datetime.fromisoformat}
    for i, (column, path) in enumerate(columns):
        names[f"conv{i}"] = column.type.convert
        names[f"derive{i}"] = column.derive
        if column.name in fixed:
            lines.append(f"    v{i} = fixed[{column.name!r}]")
            continue
        if column.derive is not None:
            lines.append(f"    v{i} = derive{i}(record, context)")
        elif len(path) == 1:
            lines.append(f"    v{i} = record.get({path[0]!r})")
        else:
            lines.append(f"    v{i} = dig(record, {path!r})")
        fits = _ALREADY_RIGHT.get(column.type.label)
        if column.type.label == "timestamptz":  # the converter's rules, without the call
            lines.append(f"    if v{i} is not None:")
            lines.append(
                f"        v{i} = fromisoformat(v{i}) if type(v{i}) is str else conv{i}(v{i})"
            )
            lines.append(f"        if v{i}.tzinfo is None:")
            lines.append("            raise ValueError")
        elif fits == "str":
            lines.append(f"    if v{i} is not None and (type(v{i}) is not str or '\\x00' in v{i}):")
            lines.append(f"        v{i} = conv{i}(v{i})")
        elif fits == "int":  # and within bigint's range, or COPY fails the whole batch
            lines.append(
                f"    if v{i} is not None and (type(v{i}) is not int "
                f"or not -0x8000000000000000 <= v{i} <= 0x7FFFFFFFFFFFFFFF):"
            )
            lines.append(f"        v{i} = conv{i}(v{i})")
        elif fits is not None:
            lines.append(f"    if v{i} is not None and type(v{i}) is not {fits}:")
            lines.append(f"        v{i} = conv{i}(v{i})")
        else:
            lines.append(f"    if v{i} is not None:")
            lines.append(f"        v{i} = conv{i}(v{i})")
    lines.append("    return [" + ", ".join(f"v{i}" for i in range(len(columns))) + "]")
    exec("\n".join(lines), names)
    return names["build"]  # type: ignore[no-any-return]


def convert_record(
    record: dict[str, Any],
    columns: Sequence[tuple[Column, tuple[str, ...]]],
    fixed: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Typed column values of one record (or array element); ValueError names the field."""
    values = []
    for column, path in columns:
        if fixed and column.name in fixed:
            values.append(fixed[column.name])
            continue
        if column.derive is not None:
            value = column.derive(record, context or {})
        elif len(path) == 1:  # most columns: one dict lookup, no path walk
            value = record.get(path[0])
        else:
            value = dig(record, path)
        if value is not None:
            try:
                value = column.type.convert(value)
            except ValueError as exc:
                raise ValueError(f"field '{'.'.join(path)}': {exc}") from None
        values.append(value)
    return values


def child_rows(
    key: Any,
    record: dict[str, Any],
    child: ChildTable,
    columns: Sequence[tuple[Column, tuple[str, ...]]],
) -> list[tuple[Any, ...]]:
    elements = dig(record, child.source_path)
    if elements is None:
        return []
    if isinstance(elements, dict):  # a schema that says "object" where examples say "array"
        elements = [elements]
    if not isinstance(elements, list):
        raise ValueError(f"field '{child.path}': expected a list, got {type(elements).__name__}")
    rows = []
    for position, element in enumerate(elements):
        if not isinstance(element, dict):
            raise ValueError(f"field '{child.path}.{position}': expected an object")
        try:
            rows.append((key, position, *convert_record(element, columns)))
        except ValueError as exc:
            raise ValueError(f"{child.path}.{position}: {exc}") from None
    return rows


Rows = tuple[tuple[Any, ...], list[list[tuple[Any, ...]]]]


class Typist:
    """A stream's typing: the COPY row (declared columns, then `data`, `_hash`, `_cursor`,
    `_run_id`) and child rows of a record, with a builder compiled per set of fixed columns."""

    def __init__(self, columns: Sequence[Column], children: Sequence[ChildTable]) -> None:
        self.columns = [(c, c.source_path) for c in columns]
        self.children = [(child, [(c, c.source_path) for c in child.columns]) for child in children]
        self._builders: dict[frozenset[str], RowBuilder] = {}
        # The builder for the fixed values last asked with (a scan's): most rows of a scan
        # share them, so the set of their names need not be made per row.
        self._last_fixed: Mapping[str, Any] | None = None
        self._last: RowBuilder = self.builder({})

    def builder(self, fixed: Mapping[str, Any]) -> RowBuilder:
        names = frozenset(fixed)
        built = self._builders.get(names)
        if built is None:
            built = self._builders[names] = compile_row_builder(self.columns, names)
        return built

    def _remember(self, fixed: Mapping[str, Any]) -> RowBuilder:
        self._last_fixed, self._last = fixed, self.builder(fixed)
        return self._last

    def rows(
        self,
        key: Any,
        record: dict[str, Any],
        tail: tuple[Any, ...],
        fixed: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> Rows:
        """The record's COPY row (its typed columns, then `tail`) and child rows; ValueError
        names what does not fit."""
        build = self._last if self._last_fixed is fixed else self._remember(fixed)
        try:
            values = build(record, fixed, context)
        except ValueError:
            values = convert_record(record, self.columns, fixed, context)  # the reason
        children = [child_rows(key, record, child, columns) for child, columns in self.children]
        return (*values, *tail), children
