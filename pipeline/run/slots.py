"""How many streams one process runs at once (`[execution] max_streams`).

Each running stream holds one database connection for its whole run, so the number of streams
running together is what the process's connection pool must hold. Without a bound, a config of
sixty accounts started sixty streams against a pool of twenty and the last forty failed on the
pool's timeout; with it, streams beyond the bound wait their turn (first come, first served)
and the pool is sized from the bound (`pool_size`), so no stream ever waits on the pool. Every
run of the process shares one `StreamSlots`: a command's streams, the slices of a backfill, the
scheduler's jobs that fire together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from pipeline.logs import get_logger
from pipeline.settings import DEFAULT_MAX_STREAMS

log = get_logger(__name__)
# Connections beyond the running streams' own: the slicing query, a failed stream's history row
# while the others still run, the metrics' freshness read.
RESERVE_CONNECTIONS = 2


def pool_size(max_streams: int) -> int:
    """The connection pool of a process running at most `max_streams` streams at once."""
    return max_streams + RESERVE_CONNECTIONS


class StreamSlots:
    def __init__(self, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self._free = asyncio.Semaphore(max_streams)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """A slot for one stream's run; waits (and says so, once) while all are taken."""
        if self._free.locked():
            self.waiting += 1
            log.info(
                "stream_waiting_for_slot",
                max_streams=self.max_streams,
                waiting=self.waiting,
                reason="max_streams streams are running; this one starts when one ends",
            )
            try:
                await self._free.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()
        try:
            yield
        finally:
            self._free.release()


__all__ = ["DEFAULT_MAX_STREAMS", "RESERVE_CONNECTIONS", "StreamSlots", "pool_size"]
