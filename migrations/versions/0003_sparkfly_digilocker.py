"""Sparkfly credentials; DigiLocker issuers, doctypes and daily statistics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _bookkeeping() -> list[sa.Column]:
    """Columns every stream table has, frozen as of this revision (same as in 0001)."""
    return [
        sa.Column("data", pg.JSONB, nullable=False),
        sa.Column("_hash", sa.LargeBinary, nullable=False),
        sa.Column("_cursor", TS),
        sa.Column("_synced_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("_run_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("_deleted_at", TS),
        sa.Column("_absent_scans", sa.SmallInteger, nullable=False, server_default="0"),
    ]


def _columns(type_: sa.types.TypeEngine, *names: str) -> list[sa.Column]:
    return [sa.Column(name, type_) for name in names]


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS sparkfly")
    op.execute("CREATE SCHEMA IF NOT EXISTS digilocker")

    op.create_table(
        "credentials",
        sa.Column("id", sa.BigInteger, primary_key=True),
        *_columns(
            sa.BigInteger(), "account_id", "member_id", "store_id", "channel_id", "merchant_id"
        ),
        sa.Column("offer_ids", pg.ARRAY(sa.BigInteger)),
        *_columns(sa.Text(), "identifier", "status"),
        sa.Column("code_lifetime", sa.BigInteger),
        sa.Column("supports_barcode", sa.Boolean),
        *_columns(sa.Text(), "offer_name", "merchant_name", "location_address", "url"),
        sa.Column("annotations", pg.JSONB),
        *_columns(TS, "redeemed_at", "voided_at", "created_at", "updated_at"),
        *_bookkeeping(),
        schema="sparkfly",
        comment="Sparkfly credentials (redeemable codes in identifier), one row per credential.",
    )
    op.create_index("credentials_member_id", "credentials", ["member_id"], schema="sparkfly")
    op.create_index("credentials_store_id", "credentials", ["store_id"], schema="sparkfly")

    op.create_table(
        "issuers",
        sa.Column("orgid", sa.Text, primary_key=True),
        *_columns(sa.Text(), "issuerid", "name", "description", "categories"),
        *_bookkeeping(),
        schema="digilocker",
        comment="DigiLocker issuers; one missing from an answer is marked deleted.",
    )
    op.create_index("issuers_issuerid", "issuers", ["issuerid"], schema="digilocker")
    op.create_table(
        "doctypes",
        sa.Column("key", sa.Text, primary_key=True),
        *_columns(sa.Text(), "orgid", "doctype", "description"),
        *_bookkeeping(),
        schema="digilocker",
        comment="Document types per issuer; key is orgid/doctype.",
    )
    op.create_index("doctypes_orgid", "doctypes", ["orgid"], schema="digilocker")
    op.create_table(
        "statistics",
        sa.Column("read_on", sa.Date, primary_key=True),
        sa.Column("count_as_on", sa.Date),
        *_columns(sa.BigInteger(), "users", "authentic_documents", "issuers", "requestors"),
        *_bookkeeping(),
        schema="digilocker",
        comment="DigiLocker platform counts, one row per (UTC) day they were read.",
    )


def downgrade() -> None:
    op.drop_table("statistics", schema="digilocker")
    op.drop_table("doctypes", schema="digilocker")
    op.drop_table("issuers", schema="digilocker")
    op.drop_table("credentials", schema="sparkfly")
    op.execute("DROP SCHEMA IF EXISTS digilocker")
    op.execute("DROP SCHEMA IF EXISTS sparkfly")
