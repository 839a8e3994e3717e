"""The machinery (pipeline schema), Soho customers and Valomnia authorities.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _bookkeeping() -> list[sa.Column]:
    """Columns every stream table has, frozen as of this revision."""
    return [
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("_hash", sa.LargeBinary, nullable=False),
        sa.Column("_cursor", TS),
        sa.Column("_synced_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("_run_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("_deleted_at", TS),
        sa.Column("_absent_scans", sa.SmallInteger, nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    for schema in ("pipeline", "soho", "valomnia"):
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    op.create_table(
        "stream_state",
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("watermark", TS),
        sa.Column("checkpoint", pg.JSONB),
        sa.Column("run_id", pg.UUID(as_uuid=True)),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        schema="pipeline",
        comment="Incremental state per stream; written in the same transaction as the data it covers.",
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False, server_default="sync"),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TS),
        sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("records_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("inserted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("unchanged", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("quarantined", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("deleted", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("watermark_before", TS),
        sa.Column("watermark_after", TS),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status in ('running', 'succeeded', 'failed', 'interrupted')", name="sync_runs_status"
        ),
        schema="pipeline",
        comment="One row per stream per run: what it read and wrote, and how it ended.",
    )
    op.create_index(
        "sync_runs_stream_started",
        "sync_runs",
        ["stream", sa.text("started_at DESC")],
        schema="pipeline",
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("record_key", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        schema="pipeline",
        comment="Records that could not be loaded, verbatim (raw JSON text), with the reason.",
    )
    op.create_index(
        "quarantine_stream_received", "quarantine", ["stream", "received_at"], schema="pipeline"
    )

    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("email", sa.Text),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS),
        sa.Column("profile_id", sa.BigInteger),
        sa.Column("organisation_id", sa.BigInteger),
        sa.Column("title", sa.Text),
        sa.Column("first_name", sa.Text),
        sa.Column("last_name", sa.Text),
        sa.Column("birth_date", sa.Date),
        sa.Column("phone", sa.Text),
        sa.Column("street", sa.Text),
        sa.Column("building", sa.Text),
        sa.Column("building_addon", sa.Text),
        sa.Column("postal_code", sa.Text),
        sa.Column("city", sa.Text),
        sa.Column("language", sa.Text),
        sa.Column("profile_created_at", TS),
        sa.Column("profile_updated_at", TS),
        *_bookkeeping(),
        schema="soho",
        comment="Customers of the token's organisation, with their profile flattened.",
    )
    op.create_index("customers_email", "customers", ["email"], schema="soho")

    op.create_table(
        "authorities",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("date_created", TS),
        sa.Column("last_updated", TS),
        *_bookkeeping(),
        schema="valomnia",
        comment="Authorities (roles), read incrementally by lastUpdated.",
    )
    op.create_index("authorities_last_updated", "authorities", ["last_updated"], schema="valomnia")


def downgrade() -> None:
    op.drop_table("authorities", schema="valomnia")
    op.drop_table("customers", schema="soho")
    op.drop_table("quarantine", schema="pipeline")
    op.drop_table("sync_runs", schema="pipeline")
    op.drop_table("stream_state", schema="pipeline")
    for schema in ("valomnia", "soho", "pipeline"):
        op.execute(f"DROP SCHEMA IF EXISTS {schema}")
