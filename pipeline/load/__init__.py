"""Load: records in, rows and state committed, in stages that pass values.

    records ──prepare──▶ PreparedBatch ──(held / merged into a Batch)──▶ write(batch, Commit)
                                                                          └▶ one transaction

- `prepare`: the pure stage (`Preparer`): key, change time, content hash; judged against the
  stored hashes in memory during a full scan (`stored`); typed ahead on a first load (`rows`).
- `held`: a re-run's few writes held until they fill a batch.
- `write`: one transaction per batch (`TableWriter.write`): stored versions, COPY / merge,
  child rows, quarantine, and the batch's `Commit` (`commit`: run counts, watermark,
  checkpoint). Nobody else opens a transaction on the write path.
- `absences`: after a complete scan, which live rows it did not see, and which are deleted.
- `sql`: every statement above, named by purpose; `indexes`: secondary indexes a first load
  builds at its end.
"""

from __future__ import annotations

from pipeline.counts import PageResult, latest
from pipeline.load.commit import Commit
from pipeline.load.prepare import (
    Batch,
    Candidate,
    PreparedBatch,
    Preparer,
    Rejected,
    content_hash,
    raw_text,
)
from pipeline.load.rows import Typist, child_rows, compile_row_builder, convert_record
from pipeline.load.write import TableWriter

__all__ = [
    "Batch",
    "Candidate",
    "Commit",
    "PageResult",
    "PreparedBatch",
    "Preparer",
    "Rejected",
    "TableWriter",
    "Typist",
    "child_rows",
    "compile_row_builder",
    "content_hash",
    "convert_record",
    "latest",
    "raw_text",
]
