"""Record lists kept as the bytes the API sent (`pipeline.extract.rawjson`)."""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.extract.rawjson import MalformedJson, holds_nul, loads_keeping_records, parse_record
from pipeline.run.fetch import records_stay_raw as _records_stay_raw
from pipeline.sources import SOURCES
from tests import hostile


def test_a_bare_list_keeps_each_record_exactly_as_sent() -> None:
    body = b'[ {"b": 2, "a": 1} ,{"x":"\\u00e9"}, 7]'
    records = loads_keeping_records(body, ())
    assert [bytes(r) for r in records] == [b'{"b": 2, "a": 1}', b'{"x":"\\u00e9"}', b"7"]
    assert [parse_record(r) for r in records] == [{"b": 2, "a": 1}, {"x": "é"}, 7]


def test_the_envelope_is_parsed_and_only_the_list_at_the_path_kept_raw() -> None:
    body = b'{"paging": {"total": 2, "next": null}, "result": {"items": [{"id": 1}], "n": 1}}'
    parsed = loads_keeping_records(body, ("result", "items"))
    assert parsed["paging"] == {"total": 2, "next": None}
    assert parsed["result"]["n"] == 1
    [record] = parsed["result"]["items"]
    assert type(record) is msgspec.Raw and bytes(record) == b'{"id": 1}'


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"data": {"not": "a list"}}', ("data",)),
        (b'{"other": []}', ("data",)),
        (b"[1, 2]", ("data",)),
        (b'{"error": "x"}', ()),
    ],
)
def test_a_body_of_another_shape_is_parsed_whole_for_the_paginator_to_judge(
    body: bytes, path: tuple[str, ...]
) -> None:
    import orjson

    assert loads_keeping_records(body, path) == orjson.loads(body)


@pytest.mark.parametrize(
    "body", [b'[{"a": 1}', b'[{"a": 1,}]', b"<html>oops</html>", b'{"data": [{"a": tru}]}']
)
def test_malformed_json_is_an_error_the_client_retries(body: bytes) -> None:
    with pytest.raises(MalformedJson) as caught:
        loads_keeping_records(body, ("data",) if body.startswith(b"{") else ())
    assert isinstance(caught.value, ValueError)  # what HttpClient treats as a bad body


def test_a_record_that_is_not_utf_8_fails_alone_when_parsed() -> None:
    """The skim checks the JSON's syntax but not its text: the record is rejected by itself
    (and quarantined by the loader), the rest of the page stands."""
    first, second = loads_keeping_records(b'[{"name": "\xff"}, {"name": "ok"}]', ())
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_record(first)
    assert parse_record(second) == {"name": "ok"}


def test_a_lone_surrogate_makes_the_body_malformed_as_a_full_parse_does() -> None:
    with pytest.raises(MalformedJson):
        loads_keeping_records(b'[{"name": "\\ud800"}]', ())


def test_parsed_values_pass_through() -> None:
    assert parse_record({"a": 1}) == {"a": 1}


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("afosto.shipments", True),
        ("afosto.prices", True),
        ("soho.customers", True),
        ("digilocker.issuers", True),
        ("valomnia.authorities", False),  # paging seeks by the last record's cursor
        ("sparkfly.credentials", False),  # each record is inside a wrapper object
        ("digilocker.statistics", False),  # the whole body is the record
    ],
)
def test_which_streams_keep_records_raw(key: str, raw: bool) -> None:
    source, name = key.split(".")
    stream = SOURCES[source].stream(name)
    assert stream is not None
    assert _records_stay_raw(stream, 100) is raw


# ---- U+0000: refused only when a decoded string really holds it ---------------------------------


@pytest.mark.parametrize(
    ("wire", "real"),
    [
        (b'{"n": "back\\\\slash \\\\u0000 x"}', False),  # text: a backslash, then u0000
        (b'{"n": "\\u0000"}', True),
        (b'{"n": "\\\\\\u0000"}', True),  # a backslash, then a NUL
        (b'{"n": "\\\\\\\\u0000"}', False),  # two backslashes, then u0000
        (b'{"\\u0000": 1}', True),  # in a key
        (b'{"n": "u0000 \\u005cu0000"}', False),
        (b'{"n": "\\\\u0000", "m": "\\u0000"}', True),  # a lookalike first, a real one after
    ],
)
def test_holds_nul_reads_escapes_as_a_decoder_would(wire: bytes, real: bool) -> None:
    assert holds_nul(wire) is real
    assert hostile.holds_nul(orjson.loads(wire)) is real


@settings(max_examples=int(os.environ.get("PIPELINE_ORACLE_EXAMPLES", "300")), deadline=None)
@given(value=hostile.json_values(huge=True), seed=st.integers(0, 2**32))
def test_holds_nul_equals_decoding_and_looking(value: Any, seed: int) -> None:
    """The fast scan over the bytes against the plain way: decode, then look."""
    wire = hostile.json_bytes(value, random.Random(seed))
    assert holds_nul(wire) is hostile.holds_nul(orjson.loads(wire))
