"""The pure stage: a page's records in, a prepared batch out. No connection, no I/O.

Every record gets its key, its change time and its content hash; what has no usable key or
change time is rejected (it goes to quarantine with the batch). During a full scan with the
stored hashes in memory (`pipeline.load.stored`) a record found unchanged there goes no
further; the rest become candidates, typed here already when most of a page is to be written
(a first load), else when the database has said which are new or changed (typing is the
costly part). The runner prepares each page the moment its body is parsed, so that this work
overlaps the database work of the batch before.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import xxhash

from pipeline.counts import latest
from pipeline.extract.rawjson import RAW_TYPES, holds_nul, parse_record
from pipeline.load.rows import Rows, Typist
from pipeline.load.stored import StoredHashes
from pipeline.records import dig
from pipeline.streams import Stream


@dataclass
class Rejected:
    key: str | None
    reason: str
    raw: str


@dataclass(slots=True)
class Candidate:
    """A record that has a key and a readable cursor; typed only if it is to be written."""

    record: dict[str, Any]
    cursor: datetime | None
    serialised: bytes  # as the API sent it (key order kept), the `data` column's value
    digest: bytes
    # Its COPY row and child rows, once typed (ahead of time when it is known to be written).
    row: tuple[Any, ...] | None = None
    children: list[list[tuple[Any, ...]]] | None = None


@dataclass
class PreparedBatch:
    """Records after the pure, per-record work: what a write needs and nothing else."""

    candidates: dict[Any, Candidate] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    # Keys to note as seen by the scan, which the database is asked about (during a full scan
    # with stored hashes in memory: only those of records not found unchanged there).
    seen_keys: list[Any] = field(default_factory=list)
    read: int = 0
    # Records found unchanged in memory (no candidate made), and their latest change time.
    unchanged: int = 0
    unchanged_max_cursor: datetime | None = None

    @property
    def retained(self) -> int:
        """Records kept for writing (candidates and rejections): what the batch holds."""
        return len(self.candidates) + len(self.rejected)

    @property
    def settled(self) -> bool:
        """Nothing to write, quarantine or ask the database about: every record was found
        unchanged in memory."""
        return not self.candidates and not self.rejected and not self.seen_keys

    def offer(self, key: Any, candidate: Candidate) -> None:
        """The same key twice in a batch: keep the newer version (the later on a tie)."""
        previous = self.candidates.get(key)
        if (
            previous is not None
            and candidate.cursor is not None
            and previous.cursor is not None
            and candidate.cursor < previous.cursor
        ):
            return
        self.candidates[key] = candidate

    @classmethod
    def merged(cls, batches: Sequence[PreparedBatch]) -> PreparedBatch:
        if len(batches) == 1:
            return batches[0]
        merged = cls()
        for batch in batches:
            merged.read += batch.read
            merged.unchanged += batch.unchanged
            merged.unchanged_max_cursor = latest(
                merged.unchanged_max_cursor, batch.unchanged_max_cursor
            )
            merged.rejected += batch.rejected
            merged.seen_keys += batch.seen_keys
            for key, candidate in batch.candidates.items():
                merged.offer(key, candidate)
        return merged


def content_hash(serialised: bytes) -> bytes:
    """What decides whether a record changed: 128 bits of XXH3 over its JSON as the API sent it.

    Every record of every scan is hashed, so the hash is on the hot path of a quiet run:
    XXH3 costs ~0.06 us per 1 KB record where BLAKE2b costs ~1.2 us (`bench/run.py`), and
    change detection needs no resistance to a forging adversary (the source is the system of
    record). Keys are not sorted first (~1.2 us more): serialisers emit fields in a fixed
    order, and a source that did not would only cost rewrites, never wrong data."""
    return xxhash.xxh3_128_digest(serialised)


def raw_text(record: Any) -> str:
    """A record as quarantine keeps it: its JSON text, whatever shape it came in."""
    if type(record) in RAW_TYPES:
        return bytes(record).decode("utf-8", "replace")
    try:
        return orjson.dumps(record).decode()
    except TypeError:
        return reprlib.repr(record)  # depth-limited: repr() recurses past the stack


def json_bytes(record: Any) -> bytes:
    """A parsed record's JSON, as hashed and stored; ValueError (the record is quarantined)
    when it cannot be written: orjson.dumps stops at 254 levels of nesting, which a source's
    JSON may exceed (orjson.loads reads 1,024)."""
    try:
        return orjson.dumps(record)
    except TypeError as exc:
        raise ValueError(f"cannot be stored as JSON ({exc})") from None


class Preparer:
    """Prepares one stream's records for one scan: its partition's fixed values, the run's
    context (for derived columns) and, during a full scan, the stored hashes to judge by."""

    def __init__(
        self,
        stream: Stream,
        typist: Typist,
        run_id: Any,
        context: Mapping[str, Any],
        instance: str,
        fixed: Mapping[str, Any] | None = None,
        stored: StoredHashes | None = None,
    ) -> None:
        self.stream = stream
        self.instance = instance
        self.typist = typist
        self.run_id = run_id
        self.fixed: dict[str, Any] = dict(fixed or {})
        self.context: dict[str, Any] = {**context, **self.fixed}
        self.stored = stored
        self._derived = [c for c in stream.columns if c.derive is not None]
        self._key = stream.primary_key
        self._key_path = self._key.source_path  # per record below: computed once
        self._cursor = stream.cursor

    def __call__(self, records: Sequence[Any], unwrapped: bool = False) -> PreparedBatch:
        """Key, change time and content hash of every record. `unwrapped`: the records are out
        of their wrappers already. Records may come raw, as the bytes the API sent
        (`pipeline.extract.rawjson`): then they are hashed as they are and parsed only if they are to
        be written."""
        batch = PreparedBatch(read=len(records))
        stored = self.stored
        wrapper = self.stream.record_path
        raw = all(type(e) in RAW_TYPES for e in records)
        bare = [dig(e, wrapper) for e in records] if wrapper and not (unwrapped or raw) else records
        if stored is None or self._derived or not (raw or all(type(r) is dict for r in bare)):
            # No stored hashes, or the rare page with a bad element or derived columns:
            # record by record (the stored hashes, if any, are then asked per record).
            return self._one_by_one(batch, records, unwrapped, stored)
        try:
            texts = bare if raw else [orjson.dumps(record) for record in bare]
        except TypeError:  # a record nested too deeply to serialise: rejected on its own
            return self._one_by_one(batch, records, unwrapped, stored)
        prefix = self._identity(None)
        digests = (
            [content_hash(prefix + bytes(s)) for s in texts]
            if prefix
            else [content_hash(s) for s in texts]
        )
        todo, batch.unchanged_max_cursor = stored.judge(digests)
        batch.unchanged = len(records) - len(todo)
        ahead = 2 * len(todo) >= len(records)  # mostly writes (a first load): type them now
        add = self._add_element if raw else self._add_candidate
        for i in todo:
            add(batch, bare[i], texts[i], digests[i], unwrapped=True, typed=ahead)
        return batch

    def _one_by_one(
        self,
        batch: PreparedBatch,
        records: Sequence[Any],
        unwrapped: bool,
        stored: StoredHashes | None,
    ) -> PreparedBatch:
        for element in records:
            self._add_element(batch, element, unwrapped=unwrapped)
        if stored is not None and batch.candidates:
            self._drop_unchanged(batch, stored)
        return batch

    def typed(self, key: Any, candidate: Candidate) -> Rows:
        """The COPY row and child rows of one candidate; ValueError names what does not fit."""
        if holds_nul(candidate.serialised):
            raise ValueError("contains a NUL character, which Postgres cannot store")
        tail = (
            candidate.serialised.decode(),
            candidate.digest,
            candidate.cursor,
            self.run_id,
            self.instance,
        )
        return self.typist.rows(key, candidate.record, tail, self.fixed, self.context)

    def _add_element(
        self,
        batch: PreparedBatch,
        element: Any,
        serialised: Any = None,
        digest: bytes | None = None,
        unwrapped: bool = False,
        typed: bool = False,
    ) -> None:
        """`_add_candidate` for an element as it came: a raw one is parsed first (its bytes
        are then what is stored and hashed); one that is not JSON is rejected."""
        if type(element) in RAW_TYPES:
            try:
                parsed = parse_record(element)
            except ValueError as exc:
                batch.rejected.append(Rejected(None, str(exc), raw_text(element)))
                return
            serialised, element, unwrapped = bytes(element), parsed, True
        self._add_candidate(batch, element, serialised, digest, unwrapped, typed)

    def _drop_unchanged(self, batch: PreparedBatch, stored: StoredHashes) -> None:
        """The record-by-record path's candidates, judged against the stored hashes."""
        keys = list(batch.candidates)
        todo, batch.unchanged_max_cursor = stored.judge([batch.candidates[k].digest for k in keys])
        unchanged = set(keys) - {keys[i] for i in todo}
        for key in unchanged:
            del batch.candidates[key]
        batch.unchanged += len(unchanged)
        batch.seen_keys = [key for key in batch.seen_keys if key not in unchanged]

    def _identity(self, record: dict[str, Any] | None) -> bytes:
        """What a record's hash covers besides its JSON: the values it gets from outside itself
        (the partition it was read under, derived columns such as a read date), so that an
        equal hash means the same row with the same content. That is what lets a full scan
        judge records by hash alone (`pipeline.load.stored`). Empty for most streams."""
        if not self.fixed and not self._derived:
            return b""
        outside = [*self.fixed.values()]
        if record is not None:
            outside += [c.derive(record, self.context) for c in self._derived]  # type: ignore[misc]
        return orjson.dumps(outside, default=str) + b"\n"

    def _add_candidate(
        self,
        batch: PreparedBatch,
        element: Any,
        serialised: bytes | None = None,
        digest: bytes | None = None,
        unwrapped: bool = False,
        typed: bool = False,
    ) -> None:
        """One record as a candidate (or a rejection); `typed`: its row is built now too."""
        wrapper = self.stream.record_path
        record = dig(element, wrapper) if wrapper and not unwrapped else element
        if not isinstance(record, dict):
            what = f"no object at '{'.'.join(wrapper)}'" if wrapper else "not a JSON object"
            batch.rejected.append(Rejected(None, what, raw_text(element)))
            return
        key: Any = None
        try:
            key = self._key_of(record)
            cursor = self._cursor.value(record) if self._cursor else None
            if serialised is None:
                serialised = json_bytes(record)
            if digest is None:
                digest = content_hash(self._identity(record) + serialised)
            candidate = Candidate(record, cursor, serialised, digest)
            if typed:
                candidate.row, candidate.children = self.typed(key, candidate)
        except ValueError as exc:
            batch.rejected.append(
                Rejected(None if key is None else str(key), str(exc), raw_text(record))
            )
            if key is not None:
                batch.seen_keys.append(key)  # it exists at the source: never "absent"
            return
        batch.seen_keys.append(key)
        batch.offer(key, candidate)

    def _key_of(self, record: dict[str, Any]) -> Any:
        key = self._key
        if key.derive is not None:
            raw = key.derive(record, self.context)
        else:
            raw = dig(record, self._key_path)
        if raw is None:
            where = (
                f"derived key '{key.name}'"
                if key.derive is not None
                else f"primary key '{'.'.join(self._key_path)}'"
            )
            raise ValueError(f"missing {where}")
        return key.type.convert(raw)


@dataclass(frozen=True)
class Batch:
    """Prepared records of one or more pages, with the page numbers they came from and the
    checkpoint that is safe once they are stored (sorted streams): what one write takes."""

    numbers: tuple[int, ...]
    prepared: PreparedBatch
    checkpoint: datetime | None = None

    @property
    def number(self) -> int:
        return self.numbers[0]

    @classmethod
    def merged(cls, batches: Sequence[Batch]) -> Batch:
        """Batches as one (one transaction): the latest checkpoint is safe, since pages of
        sorted streams arrive in cursor order."""
        if len(batches) == 1:
            return batches[0]
        checkpoints = [b.checkpoint for b in batches if b.checkpoint is not None]
        return cls(
            tuple(n for b in batches for n in b.numbers),
            PreparedBatch.merged([b.prepared for b in batches]),
            max(checkpoints) if checkpoints else None,
        )
