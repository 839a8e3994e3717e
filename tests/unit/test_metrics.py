"""The metrics' names, labels and what each recording call moves, on a registry of its own."""

from __future__ import annotations

import re

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.counts import PageResult
from pipeline.metrics import Metrics
from pipeline.run.stream_run import StreamOutcome

# Bounded by the configuration (stream, source, type) or by the code (the rest).
ALLOWED_LABELS = {"stream", "source", "type", "kind", "status", "status_class", "reason", "le"}
UNIT_SUFFIXES = ("_seconds", "_milliseconds", "_ms", "_minutes", "_hours", "_bytes")


def _outcome(status: str, read: int = 0, seconds: float = 0.0) -> StreamOutcome:
    return StreamOutcome(
        "soho.customers",
        status,
        totals=PageResult(read=read, inserted=2, updated=1, unchanged=read - 3, quarantined=1),
        deleted=4,
        seconds=seconds,
    )


def _record(m: Metrics, outcome: StreamOutcome, kind: str = "sync") -> None:
    m.record_outcome(outcome, stream="soho.customers", source="soho", source_type="soho", kind=kind)


@pytest.fixture
def every_metric() -> Metrics:
    """A registry where every metric has a series."""
    m = Metrics()
    m.declare_stream("soho.customers", "soho", "soho", 3600.0)
    _record(m, _outcome("succeeded", read=10, seconds=2.5))
    m.http_response("soho", 200)
    m.http_response("soho", None)
    m.http_retry("soho", "503")
    m.held_rows("soho.customers", "soho").set(3)
    return m


def _families(m: Metrics) -> list:  # type: ignore[type-arg]
    return list(text_string_to_metric_families(generate_latest(m.registry).decode()))


def test_names_follow_prometheus_conventions(every_metric: Metrics) -> None:
    families = _families(every_metric)
    defined = {
        metric._name
        for metric in vars(every_metric).values()
        if hasattr(metric, "_name") and hasattr(metric, "_labelnames")
    }

    assert {f.name for f in families} == defined, "every metric has a series here"
    for family in families:
        assert re.fullmatch(r"pipeline_[a-z][a-z0-9_]*", family.name), family.name
        assert family.documentation.strip(), f"{family.name} has no help text"
        names = {s.name for s in family.samples}
        if family.type == "counter":
            assert names == {f"{family.name}_total"}, family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if re.search(r"duration|timestamp|period|time", family.name):
            assert family.name.endswith("_seconds"), family.name
        for suffix in UNIT_SUFFIXES:
            assert suffix == "_seconds" or suffix not in family.name, family.name
        assert not family.name.endswith("_total") or family.type == "counter", family.name
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, (sample.name, sample.labels)


def test_a_run_moves_its_counters_and_the_duration(every_metric: Metrics) -> None:
    m = every_metric
    labels = {"stream": "soho.customers", "source": "soho", "kind": "sync"}

    _record(m, _outcome("failed", read=5, seconds=30.0))

    assert m.registry.get_sample_value("pipeline_records_read_total", labels) == 15
    assert m.registry.get_sample_value("pipeline_records_written_total", labels) == 6
    assert m.registry.get_sample_value("pipeline_records_quarantined_total", labels) == 2
    assert m.registry.get_sample_value("pipeline_records_deleted_total", labels) == 8
    assert m.registry.get_sample_value("pipeline_stream_failures_total", labels) == 1
    assert m.registry.get_sample_value("pipeline_stream_run_duration_seconds_count", labels) == 2
    bucket = {**labels, "le": "5.0"}
    assert m.registry.get_sample_value("pipeline_stream_run_duration_seconds_bucket", bucket) == 1


def test_a_skipped_run_is_counted_but_never_timed(every_metric: Metrics) -> None:
    m = every_metric
    labels = {"stream": "soho.customers", "source": "soho", "kind": "reconcile"}

    _record(m, _outcome("skipped", seconds=0.01), kind="reconcile")

    runs = m.registry.get_sample_value(
        "pipeline_stream_runs_total", {**labels, "status": "skipped"}
    )
    assert runs == 1
    assert m.registry.get_sample_value("pipeline_stream_run_duration_seconds_count", labels) is None
    assert m.registry.get_sample_value("pipeline_records_read_total", labels) is None


def test_only_a_successful_sync_moves_the_last_success() -> None:
    m = Metrics()
    labels = {"stream": "soho.customers", "source": "soho"}
    name = "pipeline_stream_last_success_timestamp_seconds"

    for kind, status in [("sync", "failed"), ("backfill", "succeeded"), ("reconcile", "succeeded")]:
        _record(m, _outcome(status, read=3), kind=kind)
    assert m.registry.get_sample_value(name, labels) is None
    _record(m, _outcome("succeeded", read=3))
    recorded = m.registry.get_sample_value(name, labels)
    assert recorded is not None

    m.set_last_success("soho.customers", "soho", recorded - 60)  # older, from the database
    assert m.registry.get_sample_value(name, labels) == recorded


@pytest.mark.parametrize(
    ("status", "status_class"),
    [(200, "2xx"), (204, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx"), (None, "error")],
)
def test_answers_are_counted_by_class(status: int | None, status_class: str) -> None:
    m = Metrics()
    m.http_response("soho", status)
    m.http_response("soho", status)
    labels = {"source": "soho", "status_class": status_class}
    assert m.registry.get_sample_value("pipeline_http_requests_total", labels) == 2


def test_an_impossible_status_is_other_not_a_series_of_its_own() -> None:
    m = Metrics()
    for status in (0, 99, 600, 999):
        m.http_response("soho", status)
    labels = {"source": "soho", "status_class": "other"}
    assert m.registry.get_sample_value("pipeline_http_requests_total", labels) == 4
