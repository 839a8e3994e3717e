"""Which streams a command runs, and with what: the configured target of each stream, chosen
by name, and the HTTP client its source gets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.config import ConfigError, Settings, SourceConfig, StreamSettings
from pipeline.extract.http import HttpClient
from pipeline.extract.limits import LimitsBySource
from pipeline.sources import SOURCES
from pipeline.streams import SourceSpec, Stream


@dataclass(frozen=True)
class StreamTarget:
    source: SourceSpec
    stream: Stream
    config: SourceConfig

    @property
    def instance(self) -> str:
        """The `[sources.<instance>]` it is configured under: the `_source` of its rows."""
        return self.config.name

    @property
    def key(self) -> str:
        """The stream's name in locks, state and run history; a filtered stream is its own."""
        base = f"{self.instance}.{self.stream.name}"
        chosen = self.filter_params
        if not chosen:
            return base
        return base + "[" + ",".join(f"{k}={v}" for k, v in sorted(chosen.items())) + "]"

    @property
    def filter_params(self) -> dict[str, str]:
        """Query parameters of the filters set in this stream's settings."""
        values = {f.param: getattr(self.settings, f.setting, None) for f in self.stream.filters}
        return {param: str(value) for param, value in values.items() if value is not None}

    @property
    def filter_scope(self) -> list[tuple[str, Any]]:
        """The rows the filtered list covers: where its silence can mean a deletion."""
        return [
            (f.condition, getattr(self.settings, f.setting))
            for f in self.stream.filters
            if getattr(self.settings, f.setting, None) is not None
        ]

    @property
    def settings(self) -> StreamSettings:
        return self.config.streams[self.stream.name]


def select_streams(settings: Settings, names: Iterable[str]) -> list[StreamTarget]:
    """Streams by `instance.stream` (its key), `type.stream` or a bare `stream` name (every
    instance that has it: `pipeline sync shipments` syncs every shop); none means every
    enabled stream configured."""
    available = [
        StreamTarget(SOURCES[config.type], stream, config)
        for config in settings.sources.values()
        for stream in SOURCES[config.type].streams
    ]
    names = list(names)
    if not names:
        return [t for t in available if t.settings.enabled]
    chosen: list[StreamTarget] = []
    for name in names:
        matches = [t for t in available if name == t.key] or [
            t
            for t in available
            if name
            in (t.stream.name, f"{t.instance}.{t.stream.name}", f"{t.source.name}.{t.stream.name}")
        ]
        if not matches:
            known = ", ".join(t.key for t in available) or "none (no source is configured)"
            raise ConfigError(f"unknown stream '{name}'; configured streams: {known}")
        chosen += [t for t in matches if t not in chosen]
    return chosen


def build_client(
    spec: SourceSpec, config: SourceConfig, limits: LimitsBySource | None = None
) -> HttpClient:
    """`limits`: the process's limits per source, shared with every other client of the
    source; without them the client has a cap and rate of its own."""
    s = config.settings
    instance = config.name  # each account has its own limits
    shared = limits.of(instance, s.max_concurrency, s.requests_per_second) if limits else None
    return HttpClient(
        instance,
        spec.api_root(s),
        auth=spec.make_auth(s),
        max_concurrency=s.max_concurrency,
        requests_per_second=s.requests_per_second,
        timeout_seconds=s.timeout_seconds,
        max_retries=s.max_retries,
        backoff_seconds=s.backoff_seconds,
        max_response_bytes=int(s.max_response_mb * 1024 * 1024),
        max_retry_after_seconds=s.max_retry_after_seconds,
        verify_tls=s.verify_tls,
        limits=shared,
    )
