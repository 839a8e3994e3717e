"""How fresh each configured stream is, for `/metrics`: its last successful sync from
`pipeline.sync_runs`, and its schedule's period.

A process knows only the runs it made itself, and forgets them when it restarts; an alert on
"time since the last success" must not fire because a service restarted, nor because the run
happened in another worker. So each process serving `/metrics` reads the last success of
every configured stream from the database when it starts and again when scraped (at most
every `every` seconds); its own runs set the gauge at once in between. A failed read keeps
the values it had and is logged: a scrape never fails because the database is away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import metrics
from pipeline.cron import period
from pipeline.logs import get_logger

if TYPE_CHECKING:
    from pipeline.targets import StreamTarget

log = get_logger(__name__)

REFRESH_EVERY_SECONDS = 15.0
REFRESH_TIMEOUT_SECONDS = 5.0

# Runs of one stream never overlap (its advisory lock), so its last successful sync to start
# is the last to end; read backwards on (stream, started_at DESC), one probe per stream.
_LAST_SUCCESS = sa.text(
    "SELECT k.stream, extract(epoch FROM r.finished_at)::float8 AS finished "
    "FROM unnest(CAST(:streams AS text[])) AS k(stream) "
    "CROSS JOIN LATERAL (SELECT s.finished_at FROM pipeline.sync_runs s "
    "WHERE s.stream = k.stream AND s.kind = 'sync' AND s.status IN ('succeeded', 'held') "
    "ORDER BY s.started_at DESC LIMIT 1) r "
    "WHERE r.finished_at IS NOT NULL"
)


async def last_successes(engine: AsyncEngine, streams: Sequence[str]) -> dict[str, float]:
    """When each stream's last successful sync ended (Unix time); streams that never
    succeeded are left out."""
    async with engine.connect() as conn:
        result = await conn.execute(_LAST_SUCCESS, {"streams": list(streams)})
        return {row.stream: row.finished for row in result}


class Freshness:
    """The freshness series of `targets` (the configured, enabled streams), kept from the
    database. `declare()` once, then `refresh` as `/metrics`' refresh hook."""

    def __init__(
        self,
        engine: AsyncEngine,
        targets: Sequence[StreamTarget],
        *,
        every: float = REFRESH_EVERY_SECONDS,
    ) -> None:
        self.engine = engine
        self.targets = list(targets)
        self.every = every
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    def declare(self) -> None:
        """Every configured stream's series, at 0, and its schedule's period."""
        m = metrics.current()
        for t in self.targets:
            m.declare_stream(t.key, t.instance, t.source.name, self._period(t))

    @staticmethod
    def _period(target: StreamTarget) -> float:
        """From now, as `pipeline status` measures it: a weekday cron's period is a day from
        Monday to Thursday and three from Friday."""
        return period(target.settings.schedule).total_seconds()

    async def refresh(self) -> None:
        """Read the last successes again unless that was done under `every` seconds ago."""
        async with self._lock:  # scrapes at once share one read
            now = time.monotonic()
            if self._read_at is not None and now - self._read_at < self.every:
                return
            self._read_at = now
            found: dict[str, float] = {}
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                    found = await last_successes(self.engine, [t.key for t in self.targets])
            except Exception as exc:
                log.warning(
                    "metrics_last_success_not_read",
                    error=f"{type(exc).__name__}: {exc}",
                    consequence="pipeline_stream_last_success_timestamp_seconds keeps the "
                    "values it had until the database answers",
                )
        m = metrics.current()
        for t in self.targets:
            m.period.labels(t.key, t.instance).set(self._period(t))
            if t.key in found:
                m.set_last_success(t.key, t.instance, found[t.key])


__all__ = ["REFRESH_EVERY_SECONDS", "Freshness", "last_successes"]
