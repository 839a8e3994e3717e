"""The fault matrix: every fault the simulators can inject, against every source.

Read the tables top to bottom: the targets are one stream per registered source, the one its
sandbox module declares (`SANDBOX.faults`, `pipeline.sandbox.spec.FaultTarget`: a paged list
where the source has one); TRANSIENT faults must be survived (the run succeeds and the table
equals the source), BAD_RECORDS must be quarantined with the rest of the page loaded. To add a
case, add a row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.sandbox import (
    SANDBOXES,
    AfostoSimulator,
    DropConnection,
    Fault,
    FaultTarget,
    HtmlPage,
    HttpError,
    RunningSimulator,
    SohoSimulator,
    Stall,
    TruncatedBody,
    serve,
)
from pipeline.sources import SOURCES
from pipeline.streams import Stream, dig
from tests.helpers import live_rows, make_settings, rows, scalar, sync

SEED = 91  # every target's simulator is built from it


@dataclass(frozen=True)
class Target:
    """A stream under test: its source, its declaration and what its sandbox declares of it."""

    source: str
    stream: Stream
    faults: FaultTarget[Any]

    @property
    def key(self) -> str:
        return f"{self.source}.{self.stream.name}"

    @property
    def table(self) -> str:
        return f"{SOURCES[self.source].schema}.{self.stream.name}"

    @property
    def pk(self) -> str:
        return self.stream.primary_key.name

    def truth(self, sim: Any) -> dict[Any, Any]:
        """What the simulator holds for the stream, by primary key, as served."""
        records = SANDBOXES[self.source].streams[self.stream.name].records(sim)
        return {dig(r, self.stream.primary_key.source_path): r for r in records}


def targets() -> list[Target]:
    """The stream each registered source's sandbox puts in the matrix (`SANDBOX.faults`)."""
    found = []
    for name, sandbox in SANDBOXES.items():
        (stream,) = [s for s in SOURCES[name].streams if s.name == sandbox.faults.stream]
        found.append(Target(name, stream, sandbox.faults))
    return found


TARGETS = targets()


def _now_http_date() -> str:
    return format_datetime(datetime.now(UTC), usegmt=True)


# (id, fault, how many requests it hits, after how many list requests)
TRANSIENT: list[tuple[str, Callable[[], Fault], int]] = [
    ("429 Retry-After seconds", lambda: HttpError(429, retry_after="0"), 1),
    ("429 Retry-After HTTP-date", lambda: HttpError(429, retry_after=_now_http_date()), 1),
    ("500 burst", lambda: HttpError(500), 3),
    ("502 burst", lambda: HttpError(502), 2),
    ("503 burst", lambda: HttpError(503), 3),
    ("504 burst", lambda: HttpError(504), 2),
    ("connection reset mid-body", lambda: DropConnection(), 1),
    ("read stalls past the timeout", lambda: Stall(1.5), 1),
    ("truncated JSON", lambda: TruncatedBody(), 1),
    ("HTML error page with 200", lambda: HtmlPage(200), 1),
    (
        "wrong Content-Type",
        lambda: HttpError(200, body=b'{"ok": true}', content_type="text/plain"),
        1,
    ),
    ("empty body", lambda: HttpError(200, body=b"", content_type="application/json"), 1),
]


@pytest.fixture(params=TARGETS, ids=[t.key for t in TARGETS])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Target, RunningSimulator]]:
    spec: Target = request.param
    async with serve(spec.faults.make(SEED)) as running:
        yield spec, running


def _settings(spec: Target, running: RunningSimulator, **source: Any) -> Any:
    extra = {spec.source: {"timeout_seconds": 0.8, **source}}
    streams = {}
    if spec.faults.page_size is not None:
        streams = {spec.key: {"page_size": spec.faults.page_size}}
    return make_settings(**{spec.source: running}, extra=extra, streams=streams)


async def _stored(engine: AsyncEngine, spec: Target) -> dict[Any, Any]:
    result = await rows(
        engine, f"SELECT {spec.pk} AS k, data FROM {spec.table} WHERE _deleted_at IS NULL"
    )
    return {r.k: r.data for r in result}


@pytest.mark.parametrize(("fault_id", "fault", "times"), TRANSIENT, ids=[c[0] for c in TRANSIENT])
async def test_transient_faults_are_survived(
    engine: AsyncEngine,
    target: tuple[Target, RunningSimulator],
    fault_id: str,
    fault: Callable[[], Fault],
    times: int,
) -> None:
    spec, running = target
    after = 0 if spec.faults.page_size is None else 1  # mid-stream where there are pages
    running.sim.faults.add(fault(), times=times, after=after, path_prefix=spec.faults.list_path)

    outcome = (await sync(engine, _settings(spec, running), spec.key))[spec.key]

    assert outcome.status == "succeeded", f"{fault_id}: {outcome.error}"
    assert await _stored(engine, spec) == spec.truth(running.sim)
    assert any(r.fault for r in running.sim.requests), "the fault never fired"


async def test_an_exhausted_retry_budget_fails_clearly_and_keeps_state(
    engine: AsyncEngine, target: tuple[Target, RunningSimulator]
) -> None:
    spec, running = target
    settings = _settings(spec, running, max_retries=1)
    await sync(engine, settings, spec.key)
    state_before = await rows(
        engine, "SELECT stream, watermark, checkpoint::text FROM pipeline.stream_state ORDER BY 1"
    )
    running.sim.faults.add(HttpError(503), times=None, path_prefix=spec.faults.list_path)

    outcome = (await sync(engine, settings, spec.key))[spec.key]

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert error.startswith(f"{spec.key}:") and spec.faults.list_path.split("/")[-1] in error
    assert "after 2 attempts" in error and "503" in error
    assert (
        await rows(
            engine,
            "SELECT stream, watermark, checkpoint::text FROM pipeline.stream_state ORDER BY 1",
        )
        == state_before
    )


# ---- bad records: quarantined, the rest of the page loads ------------------------------------


# (id, corruption, quarantined?) — applied to one record, given the names of its key field
# and of its cursor's timestamp field
BAD_RECORDS: list[tuple[str, Callable[[dict[str, Any], str, str], None], bool]] = [
    ("no primary key", lambda r, key, time: r.pop(key), True),
    ("unparseable timestamp", lambda r, key, time: r.update({time: "last Tuesday"}), True),
    (
        "timestamp without a zone",
        lambda r, key, time: r.update({time: "2024-03-01T10:00:00"}),
        True,
    ),
    (
        "wrong type for a typed column",
        lambda r, key, time: r.update({key: {"nested": "object"}}),
        True,
    ),
    (
        "an extra unknown field",
        lambda r, key, time: r.update({"field_added_next_year": {"a": 1}}),
        False,
    ),
]

# The targets whose simulator keeps records a test can reach and break (`FaultTarget.record`).
BREAKABLE = [t for t in TARGETS if t.faults.record is not None]


def _fields(stream: Stream) -> tuple[str, str]:
    """The record's key field and its cursor's (first) timestamp field, to break."""
    (key,) = stream.primary_key.source_path
    assert stream.cursor is not None, f"{stream.name}: the bad-record cases need a cursor"
    return key, stream.cursor.paths[0]


@pytest.mark.parametrize(
    ("case", "corrupt", "quarantined"), BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS]
)
@pytest.mark.parametrize("spec", BREAKABLE, ids=[t.source for t in BREAKABLE])
async def test_bad_records_are_quarantined_and_the_rest_loads(
    engine: AsyncEngine,
    spec: Target,
    case: str,
    corrupt: Callable[[dict[str, Any], str, str], None],
    quarantined: bool,
) -> None:
    assert spec.faults.record is not None
    key_field, time_field = _fields(spec.stream)
    async with serve(spec.faults.make(SEED)) as running:
        sim: Any = running.sim
        untouched = spec.truth(sim)
        record = spec.faults.record(sim, 7)
        key = record[key_field]
        corrupt(record, key_field, time_field)

        outcome = (await sync(engine, _settings(spec, running), spec.key))[spec.key]
        after = None if quarantined else spec.truth(sim)

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.quarantined == (1 if quarantined else 0)
    stored = await _stored(engine, spec)
    if quarantined:
        assert stored == {k: v for k, v in untouched.items() if k != key}
        [row] = await rows(engine, "SELECT reason, raw FROM pipeline.quarantine")
        assert row.reason and row.raw.startswith("{")
        assert await scalar(engine, "SELECT quarantined FROM pipeline.sync_runs") == 1
    else:
        assert stored == after  # the unknown field is kept in `data`


# ---- pages that overlap or overflow ----------------------------------------------------------


async def test_the_same_record_on_two_pages_is_stored_once(engine: AsyncEngine) -> None:
    """A record inserted before the current offset mid-scan pushes one record onto two pages."""
    async with serve(SohoSimulator(customers=80, seed=96)) as running:
        sim: Any = running.sim
        pushed: list[int] = []

        def insert_in_front(_sim: Any, request: Any) -> None:
            if request.query.get("page") == "2" and not pushed:
                pushed.append(sim.insert_customer(id=1)["id"])  # below every existing id

        sim.on_request(insert_in_front)
        settings = make_settings(running, soho_extra={"max_concurrency": 1})
        outcome = (await sync(engine, settings, "customers"))["soho.customers"]
        truth = {c["id"]: c for c in sim.truth()}

    assert outcome.status == "succeeded" and pushed == [1]
    stored = await live_rows(engine, "soho.customers")
    assert outcome.totals.read == 81  # one record was read twice (and the new one missed)...
    assert set(truth) - set(stored) == {1}  # ...so only the record inserted mid-scan waits
    assert {k: v for k, v in truth.items() if k != 1} == stored  # for the next run


async def _shipments_with_second_page(
    engine: AsyncEngine, sim: AfostoSimulator, body: bytes
) -> Any:
    """Sync Afosto shipments 25 a page, the second page answered once with `body`."""
    async with serve(sim) as running:
        running.sim.faults.add(
            HttpError(200, body=body, content_type="application/json"),
            times=1,
            after=1,
            path_prefix="/lcs/shipments",
        )
        settings = make_settings(afosto=running, streams={"afosto.shipments": {"page_size": 25}})
        return (await sync(engine, settings, "shipments"))["afosto.shipments"]


async def test_a_page_far_larger_than_asked_is_taken_as_it_comes(engine: AsyncEngine) -> None:
    import orjson

    sim = AfostoSimulator(
        contacts=1, shipments=120, parcels=1, groups=1, prices_per_group=1, seed=97
    )
    everything = sim.truth("shipments")
    # The second page answers with 120 records where 25 were asked for.
    outcome = await _shipments_with_second_page(engine, sim, orjson.dumps(everything))

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.inserted == 120 and outcome.totals.read > 120  # duplicates merged
    assert await live_rows(engine, "afosto.shipments") == {s["id"]: s for s in everything}


async def test_a_record_that_is_not_utf_8_is_quarantined_and_its_page_loads(
    engine: AsyncEngine,
) -> None:
    """Afosto's records stay raw until written (`pipeline.extract.rawjson`): the skim checks the body's
    syntax, not its text, so one bad record is rejected alone instead of the page retried."""
    import orjson

    sim = AfostoSimulator(
        contacts=1, shipments=60, parcels=1, groups=1, prices_per_group=1, seed=98
    )
    everything = sim.truth("shipments")
    page_two = [orjson.dumps(s) for s in everything[25:50]]
    bad = everything[28]
    page_two[3] = page_two[3].replace(b'"number":"', b'"number":"\xff', 1)
    outcome = await _shipments_with_second_page(engine, sim, b"[" + b",".join(page_two) + b"]")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.totals.quarantined == 1
    assert await live_rows(engine, "afosto.shipments") == {
        s["id"]: s for s in everything if s["id"] != bad["id"]
    }
    [row] = await rows(engine, "SELECT reason, raw FROM pipeline.quarantine")
    assert row.reason.startswith("not valid JSON") and bad["id"] in row.raw
