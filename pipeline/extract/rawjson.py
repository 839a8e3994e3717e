"""A list response's records as the bytes the API sent, not yet parsed.

A full scan re-reads every record, and nearly all of them are unchanged: what it needs of such
a record is its content hash, and the hash is over the record's JSON as sent. Parsing it into a
dict (and serialising it again to hash it) was most of a re-run's work: for a page of 100
shipments (110 KB), parsing cost ~185 us and serialising + hashing ~70 us, while finding each
record's bytes costs ~50 us (msgspec skims them, checking the JSON's syntax on the way) and
hashing them ~8 us. A record is parsed only when it is to be written, ~2 us; a first load,
which parses every record, costs what it did (`bench/`, 1 KB shipments).

The rest of the body (paging envelopes, totals, next links) is parsed as usual. A body whose
shape differs from the declared one (no list at the path) is parsed whole, so the paginator's
check reports it exactly as it would any other body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

# A record as the bytes the API sent: msgspec's view into the body, or bytes of its own.
RAW_TYPES = frozenset({msgspec.Raw, bytes})

_RAW_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_RAW_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


class MalformedJson(ValueError):
    """The body is not JSON (truncated, an HTML page) or not JSON this program can read
    (nested deeper than its parsers go): the client retries it."""

    @classmethod
    def of(cls, exc: BaseException) -> MalformedJson:
        """The parser's complaint, said the same way whichever parser gave up on depth."""
        text = str(exc)
        # msgspec: RecursionError; orjson.loads: "depth limit exceeded"
        if isinstance(exc, RecursionError) or "depth limit" in text.lower():
            return cls("nested too deeply to read (JSON deeper than about 1,000 levels)")
        return cls(text)


def loads_keeping_records(body: bytes, records_path: Sequence[str]) -> Any:
    """The parsed body, with the list at `records_path` holding each record's raw bytes."""
    try:
        return _split(body, tuple(records_path))
    except msgspec.ValidationError:
        pass  # not the declared shape: parsed whole, for the paginator to judge
    except (msgspec.DecodeError, orjson.JSONDecodeError) as exc:  # orjson: beside the records
        raise MalformedJson.of(exc) from None
    except RecursionError as exc:  # msgspec skims nested values recursively (~1,000 levels)
        raise MalformedJson.of(exc) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson.of(exc) from None


def loads_parsing_records(body: bytes, records_path: Sequence[str]) -> Any:
    """The parsed body, records parsed too (for streams whose paging looks inside them).

    A body orjson refuses may still be well-formed JSON with one record whose text is not
    UTF-8: then each record is parsed on its own, and one that cannot be stays raw, for the
    loader to quarantine alone, as on the raw path. A body that is not JSON at all is
    malformed (retried)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    parsed = loads_keeping_records(body, records_path)
    records = parsed
    for step in records_path:
        records = records.get(step) if isinstance(records, dict) else None
    if isinstance(records, list):
        records[:] = [_parsed_if_text(record) for record in records]
    return parsed


def _parsed_if_text(record: Any) -> Any:
    try:
        return parse_record(record)
    except ValueError:
        return record


def _split(body: bytes | msgspec.Raw, path: tuple[str, ...]) -> Any:
    if not path:
        return _RAW_ITEMS.decode(body)
    fields = _RAW_FIELDS.decode(body)
    head, rest = path[0], path[1:]
    return {
        name: _split(value, rest) if name == head else orjson.loads(memoryview(value))
        for name, value in fields.items()
    }


_NUL_ESCAPE = b"\\u0000"
_BACKSLASH = 0x5C


def holds_nul(serialised: bytes) -> bool:
    """Whether JSON text decodes to a string (or key) holding U+0000, which Postgres cannot
    store in text or jsonb.

    Valid JSON can carry U+0000 only as the escape `\\u0000` (a raw control byte is malformed),
    but those six bytes are also how the text `\\u0000` itself begins when its backslash is
    escaped (`\\\\u0000`): the escape is real only after an even run of backslashes. Records
    rarely hold either, so the common case costs one `find` over the bytes; only a hit counts
    backslashes, instead of parsing the record to look."""
    at = serialised.find(_NUL_ESCAPE)
    while at != -1:
        run = 0
        while at - run > 0 and serialised[at - run - 1] == _BACKSLASH:
            run += 1
        if run % 2 == 0:
            return True
        at = serialised.find(_NUL_ESCAPE, at + 1)
    return False


def parse_record(element: Any) -> Any:
    """A record element as a Python value, whether it came raw or parsed; a raw one that is
    not valid JSON text raises ValueError (bad UTF-8: the skim checks syntax, not text)."""
    if type(element) not in RAW_TYPES:
        return element
    try:
        return orjson.loads(memoryview(element))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
