"""The compiled row builder (the hot loop of a load) against the plain per-column conversion."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.load import compile_row_builder, convert_record
from pipeline.sources import SOURCES
from pipeline.streams import Stream
from tests import hostile

STREAMS = [stream for source in SOURCES.values() for stream in source.streams]


def _field_values() -> st.SearchStrategy[Any]:
    """What a field may hold: anything JSON, and the edges of every column type."""
    timestamps = st.sampled_from(
        ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123+02:00", "2024-05-01T10:00:00", "x"]
    )
    return (
        hostile.json_values()
        | hostile.integers()
        | timestamps
        | st.sampled_from(["true", "false", "12", "-3", "2024-05-01", "01052024", 1.5])
    )


@pytest.mark.parametrize("stream", STREAMS, ids=[s.name for s in STREAMS])
@settings(max_examples=int(os.environ.get("PIPELINE_ORACLE_EXAMPLES", "6")) * 10, deadline=None)
@given(data=st.data())
def test_the_compiled_builder_types_a_record_as_the_plain_conversion_does(
    stream: Stream, data: st.DataObject
) -> None:
    columns = [(c, c.source_path) for c in stream.columns if c.derive is None]
    record: dict[str, Any] = {}
    for _column, path in columns:
        if data.draw(st.booleans()):
            target = record
            for step in path[:-1]:
                target = target.setdefault(step, {})
            target[path[-1]] = data.draw(_field_values())
    try:
        expected: Any = convert_record(record, columns)
    except ValueError:
        expected = ValueError
    try:
        built: Any = compile_row_builder(columns)(record, {}, {})
    except ValueError:
        built = ValueError
    assert built == expected
