"""The tables, as SQLAlchemy Core metadata: the single truth Alembic migrations must match.

Stream tables are derived from the stream declarations (typed columns + the raw record + the
bookkeeping columns), so a declaration and its table cannot drift apart unnoticed: a test
compares the migrated database with this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from pipeline.sources import SOURCES
from pipeline.streams import ChildTable, SourceSpec, Stream

metadata = sa.MetaData()

PIPELINE_SCHEMA = "pipeline"
# procrastinate's tables (revision 0006): its own SQL, not declared here.
QUEUE_SCHEMA = "pipeline_queue"


def declared_here(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name`: compare everything but the job queue's schema."""
    return not (type_ == "schema" and name == QUEUE_SCHEMA)


stream_state = sa.Table(
    "stream_state",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("watermark", sa.DateTime(timezone=True)),
    sa.Column("checkpoint", pg.JSONB),
    sa.Column("run_id", pg.UUID(as_uuid=True)),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    schema=PIPELINE_SCHEMA,
    comment="Incremental state per stream; written in the same transaction as the data it covers.",
)

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False, server_default="sync"),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column(
        "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
    sa.Column("records_read", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("inserted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("unchanged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("watermark_before", sa.DateTime(timezone=True)),
    sa.Column("watermark_after", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    # Rows a run would have marked deleted beyond `max_delete_fraction`: held, not applied.
    sa.Column("held_deletes", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint(
        "status in ('running', 'succeeded', 'failed', 'interrupted', 'skipped', 'held')",
        name="sync_runs_status",
    ),
    sa.Index("sync_runs_stream_started", "stream", sa.text("started_at DESC")),
    schema=PIPELINE_SCHEMA,
    comment="One row per stream per run: what it read and wrote, and how it ended.",
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("record_key", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column(
        "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Index("quarantine_stream_received", "stream", "received_at"),
    schema=PIPELINE_SCHEMA,
    comment="Records that could not be loaded, verbatim (raw JSON text), with the reason.",
)


job_aborts = sa.Table(
    "job_aborts",
    metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("application_name", sa.Text),
    sa.Column("client_addr", pg.INET),
    sa.Column("backend_pid", sa.Integer),
    sa.Column(
        "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    schema=PIPELINE_SCHEMA,
    comment="Who set abort_requested on a queue job: the run it stopped names them.",
)


def _source_column() -> sa.Column[str]:
    """The instance a row was read from (`[sources.<instance>]`): first in every primary key,
    so instances of one source type share its tables (migration 0005)."""
    return sa.Column("_source", sa.Text, primary_key=True)


def _stream_table(spec: SourceSpec, stream: Stream) -> sa.Table:
    typed = [
        sa.Column(
            column.name,
            column.type.sql(),
            primary_key=column.primary_key,
            nullable=not column.primary_key,
        )
        for column in stream.columns
    ]
    indexes = [
        sa.Index(f"{stream.name}_{column.name}", column.name)
        for column in stream.columns
        if column.index
    ]
    return sa.Table(
        stream.name,
        metadata,
        _source_column(),
        *typed,
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("_hash", sa.LargeBinary, nullable=False),
        sa.Column("_cursor", sa.DateTime(timezone=True)),
        sa.Column(
            "_synced_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("_run_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("_deleted_at", sa.DateTime(timezone=True)),
        sa.Column("_absent_scans", sa.SmallInteger, nullable=False, server_default="0"),
        *indexes,
        schema=spec.schema,
        comment=stream.description or None,
    )


def _child_table(spec: SourceSpec, stream: Stream, child: ChildTable) -> sa.Table:
    key_type = stream.primary_key.type.sql()
    return sa.Table(
        child.name,
        metadata,
        _source_column(),
        sa.Column(child.parent_column, key_type, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        *(sa.Column(column.name, column.type.sql()) for column in child.columns),
        schema=spec.schema,
        comment=child.description or None,
    )


def streams_with_tables(spec: SourceSpec) -> list[Stream]:
    """The source's streams, plus the parents of partitioned streams (they have tables too)."""
    out: list[Stream] = []
    for stream in spec.streams:
        if stream.partitions is not None:
            out.append(stream.partitions.parent)
        out.append(stream)
    return [s for i, s in enumerate(out) if not any(s is seen for seen in out[:i])]


STREAM_TABLES: dict[str, sa.Table] = {
    f"{spec.name}.{stream.name}": _stream_table(spec, stream)
    for spec in SOURCES.values()
    for stream in streams_with_tables(spec)
}

CHILD_TABLES: dict[str, sa.Table] = {
    f"{spec.name}.{child.name}": _child_table(spec, stream, child)
    for spec in SOURCES.values()
    for stream in streams_with_tables(spec)
    for child in stream.children
}
