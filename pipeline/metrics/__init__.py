"""Prometheus metrics: their definitions, one registry per process, and the narrow calls the
engine makes when something worth counting happens.

    Runner (end of each stream's run) ─▶ record_outcome
    HttpClient (each answer, each retry) ─▶ http_response, http_retry
    HeldWrites (records held, released) ─▶ held_rows(...).set
    freshness (sync_runs, schedules)     ─▶ declare_stream, set_last_success
                                             ─▶ server: GET /metrics (`--metrics-port`)

The registry is our own, not prometheus_client's global default, so tests take a fresh one
with `reset()` and nothing a library registers on the default one leaks into ours. Names
follow Prometheus conventions: `pipeline_` first, counters end `_total`, durations and
timestamps `_seconds`. Labels stay few and bounded: `stream` (the key, `<instance>.<stream>`),
`source` (the instance), `kind` (sync, backfill, reconcile, rederive), a run's `status`, an
answer's `status_class` and a retry's `reason`; never a run id, a URL, a page or a record.

What the engine calls costs a dictionary look-up and an increment (well under a microsecond):
the HTTP calls run once per request, the held gauge once per page, the rest once per run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

if TYPE_CHECKING:
    from pipeline.run.stream_run import StreamOutcome

# `<name>_created` series (a timestamp per counter) double what is exported and follow no
# naming rule of ours; Prometheus does not need them to compute rates.
disable_created_metrics()

# A run takes seconds (a quiet re-read) to hours (a first load of millions of records).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
# The statuses a run ends with (`StreamOutcome.status`).
RUN_STATUSES = ("succeeded", "failed", "interrupted", "skipped")

_STREAM = ("stream", "source")


class Metrics:
    """Every metric of the pipeline, on one registry. Use the process's (`current()`); a test
    takes a fresh one with `reset()`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.source_info = Gauge(
            "pipeline_source_info",
            "Always 1: the source system (type) each configured source instance reads.",
            ("source", "type"),
            registry=r,
        )
        self.last_success = Gauge(
            "pipeline_stream_last_success_timestamp_seconds",
            "When the stream's last successful sync ended (Unix time); read from "
            "pipeline.sync_runs at start and on scrape, so a restart does not reset it.",
            _STREAM,
            registry=r,
        )
        self.period = Gauge(
            "pipeline_stream_schedule_period_seconds",
            "Time between two firings of the stream's sync schedule: a fresh stream has "
            "succeeded within twice this (as `pipeline status` judges it).",
            _STREAM,
            registry=r,
        )
        self.runs = Counter(
            "pipeline_stream_runs",
            "Runs of a stream that ended, by kind and status.",
            (*_STREAM, "kind", "status"),
            registry=r,
        )
        self.failures = Counter(
            "pipeline_stream_failures",
            "Runs of a stream that failed (0 from the start for every configured stream, so "
            "increase() sees the first failure).",
            (*_STREAM, "kind"),
            registry=r,
        )
        self.duration = Histogram(
            "pipeline_stream_run_duration_seconds",
            "How long a stream's run took, from taking its lock to recording its end.",
            (*_STREAM, "kind"),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.read = Counter(
            "pipeline_records_read",
            "Records read from the source (or stored rows, for a rederive).",
            (*_STREAM, "kind"),
            registry=r,
        )
        self.written = Counter(
            "pipeline_records_written",
            "Rows inserted or updated.",
            (*_STREAM, "kind"),
            registry=r,
        )
        self.quarantined = Counter(
            "pipeline_records_quarantined",
            "Records that could not be loaded and went to pipeline.quarantine.",
            (*_STREAM, "kind"),
            registry=r,
        )
        self.deleted = Counter(
            "pipeline_records_deleted",
            "Rows marked deleted (their absence at the source confirmed).",
            (*_STREAM, "kind"),
            registry=r,
        )
        self.http_requests = Counter(
            "pipeline_http_requests",
            "HTTP requests sent to a source, by the class of their answer ('error': no answer, "
            "a timeout or a connection error).",
            ("source", "status_class"),
            registry=r,
        )
        self.http_retries = Counter(
            "pipeline_http_retries",
            "Requests to a source sent again after a retriable failure, by reason (the HTTP "
            "status, 'timeout', 'connection' or 'malformed_body').",
            ("source", "reason"),
            registry=r,
        )
        self.held = Gauge(
            "pipeline_held_rows",
            "Records of a running full scan held in memory until they fill a transaction.",
            _STREAM,
            registry=r,
        )
        self._last_success: dict[tuple[str, str], float] = {}
        self._answers: dict[tuple[str, str], Counter] = {}

    # ---- streams ---------------------------------------------------------------------------

    def declare_stream(
        self, stream: str, source: str, source_type: str, period_seconds: float | None
    ) -> None:
        """A configured stream: its series exist at 0 from the start (a counter that appears
        at 1 hides its first increase from Prometheus), its schedule's period is known."""
        self.source_info.labels(source, source_type).set(1)
        if period_seconds is not None:
            self.period.labels(stream, source).set(period_seconds)
        for counter in (self.failures, self.read, self.written, self.quarantined, self.deleted):
            counter.labels(stream, source, "sync")

    def record_outcome(
        self, outcome: StreamOutcome, *, stream: str, source: str, source_type: str, kind: str
    ) -> None:
        """A run ended. `stream` is the target's key (an outcome's key may carry a backfill
        slice's window, which would make a series per window)."""
        labels = (stream, source, kind)
        self.source_info.labels(source, source_type).set(1)
        self.runs.labels(*labels, outcome.status).inc()
        if outcome.status == "skipped":
            return  # another run held the lock: nothing ran
        if outcome.status == "failed":
            self.failures.labels(*labels).inc()
        totals = outcome.totals
        self.duration.labels(*labels).observe(outcome.seconds)
        self.read.labels(*labels).inc(totals.read)
        self.written.labels(*labels).inc(totals.inserted + totals.updated)
        self.quarantined.labels(*labels).inc(totals.quarantined)
        self.deleted.labels(*labels).inc(outcome.deleted)
        if kind == "sync" and outcome.status in ("succeeded", "held"):  # held: data loaded
            self.set_last_success(stream, source, time.time())

    def set_last_success(self, stream: str, source: str, timestamp: float) -> None:
        """Never moves back: the database may know an older success than this process."""
        key = (stream, source)
        if timestamp > self._last_success.get(key, 0.0):
            self._last_success[key] = timestamp
            self.last_success.labels(stream, source).set(timestamp)

    def held_rows(self, stream: str, source: str) -> Gauge:
        return self.held.labels(stream, source)

    # ---- HTTP ------------------------------------------------------------------------------

    def http_response(self, source: str, status: int | None) -> None:
        """One request ended: with an answer of `status`, or with none (None)."""
        key = (source, _STATUS_CLASSES.get(status, "other") if status is not None else "error")
        counter = self._answers.get(key)
        if counter is None:
            counter = self._answers[key] = self.http_requests.labels(*key)
        counter.inc()

    def http_retry(self, source: str, reason: str) -> None:
        self.http_retries.labels(source, reason).inc()


_STATUS_CLASSES = {status: f"{status // 100}xx" for status in range(100, 600)}

_current = Metrics()


def current() -> Metrics:
    """The process's metrics, the ones `/metrics` serves."""
    return _current


def reset(registry: CollectorRegistry | None = None) -> Metrics:
    """Start the process's metrics afresh (tests); what was recorded before is gone."""
    global _current
    _current = Metrics(registry)
    return _current


# What the engine calls: the process's current metrics, looked up at each call so that a
# `reset()` takes effect everywhere at once.


def record_outcome(
    outcome: StreamOutcome, *, stream: str, source: str, source_type: str, kind: str
) -> None:
    _current.record_outcome(
        outcome, stream=stream, source=source, source_type=source_type, kind=kind
    )


def http_response(source: str, status: int | None) -> None:
    _current.http_response(source, status)


def http_retry(source: str, reason: str) -> None:
    _current.http_retry(source, reason)


def held_rows(stream: str, source: str) -> Gauge:
    return _current.held_rows(stream, source)


__all__ = [
    "DURATION_BUCKETS",
    "Metrics",
    "current",
    "held_rows",
    "http_response",
    "http_retry",
    "record_outcome",
    "reset",
]
