"""What `pipeline status` shows of the queue: per stream, jobs waiting, running, and failed
since the stream's last successful job (older failures were made good by that success)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pipeline.queue.app import TASK_NAME
from pipeline.tables import QUEUE_SCHEMA


@dataclass(frozen=True)
class StreamJobs:
    waiting: int = 0
    running: int = 0
    failed: int = 0

    def __str__(self) -> str:
        parts = [
            f"{n} {label}"
            for n, label in (
                (self.waiting, "waiting"),
                (self.running, "running"),
                (self.failed, "failed"),
            )
            if n
        ]
        return ", ".join(parts) or "-"


_COUNTS = sa.text(
    f"""
    WITH jobs AS (
        SELECT id, args->>'stream' AS stream, status::text AS status
        FROM {QUEUE_SCHEMA}.procrastinate_jobs WHERE task_name = :task
    ), last_success AS (
        SELECT stream, max(id) AS id FROM jobs WHERE status = 'succeeded' GROUP BY stream
    )
    SELECT j.stream,
           count(*) FILTER (WHERE j.status = 'todo') AS waiting,
           count(*) FILTER (WHERE j.status = 'doing') AS running,
           count(*) FILTER (WHERE j.status = 'failed' AND j.id > coalesce(s.id, 0)) AS failed
    FROM jobs j LEFT JOIN last_success s USING (stream)
    WHERE j.status IN ('todo', 'doing', 'failed')
    GROUP BY j.stream
    """
)


async def jobs_by_stream(conn: AsyncConnection) -> dict[str, StreamJobs]:
    rows = await conn.execute(_COUNTS, {"task": TASK_NAME})
    return {r.stream: StreamJobs(r.waiting, r.running, r.failed) for r in rows}


__all__ = ["StreamJobs", "jobs_by_stream"]
