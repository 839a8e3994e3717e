"""What commits with a batch's rows, as one value: the run's counts, the watermark, the
checkpoint. A writer applies it inside the batch's transaction, so state moves only with the
data it covers and a reader sees what each commit holds by reading this value (as Singer's
STATE message or Airbyte's state message, but in the same Postgres transaction as the rows).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from pipeline import history
from pipeline.counts import PageResult
from pipeline.state import advance_watermark, save_checkpoint


@dataclass(frozen=True)
class Commit:
    """`history_row`: the run's `sync_runs` row, which gets this batch's counts plus
    `counted_before` (quiet batches written no transaction of their own) over `pages` pages.
    `watermark`: (stream key, value) to advance to. `checkpoint`: (state key, value) to save;
    a value of None clears it."""

    run_id: uuid.UUID
    history_row: int | None = None
    pages: int = 0
    counted_before: PageResult = field(default_factory=PageResult)
    watermark: tuple[str, datetime] | None = None
    checkpoint: tuple[str, dict[str, Any] | None] | None = None

    async def apply(self, conn: asyncpg.Connection, result: PageResult) -> None:
        """Write it; call inside the transaction that writes the rows `result` counts."""
        if self.history_row is not None:
            counted = self.counted_before.plus(result)
            await history.add_page(conn, self.history_row, counted, pages=self.pages)
        if self.watermark is not None:
            key, value = self.watermark
            await advance_watermark(conn, key, value, self.run_id)
        if self.checkpoint is not None:
            key, checkpoint = self.checkpoint
            await save_checkpoint(conn, key, checkpoint, self.run_id)
