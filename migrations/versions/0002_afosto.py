"""Afosto: contacts, shipments, parcels (+ items), price groups, prices (+ VAT lines).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "afosto"


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


def _texts(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.Text) for name in names]


def _flags(*names: str) -> list[sa.Column]:
    return [sa.Column(name, sa.Boolean) for name in names]


def _times(*names: str) -> list[sa.Column]:
    return [sa.Column(name, TS) for name in names]


def _index(table: str, column: str) -> None:
    op.create_index(f"{table}_{column}", table, [column], schema=SCHEMA)


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")

    op.create_table(
        "contacts",
        sa.Column("id", sa.Text, primary_key=True),
        *_texts("version", "email", "given_name", "additional_name", "family_name"),
        sa.Column("is_guest", sa.Boolean),
        sa.Column("audience", sa.Text),
        sa.Column("tags", pg.ARRAY(sa.Text)),
        *_texts(
            "organisation_id",
            "organisation_name",
            "billing_country_code",
            "billing_locality",
            "billing_postal_code",
        ),
        *_times("created_at", "updated_at", "deleted_at"),
        *_bookkeeping(),
        schema=SCHEMA,
        comment="Afosto contacts (relations), with the primary organisation and billing place.",
    )
    _index("contacts", "email")

    op.create_table(
        "shipments",
        sa.Column("id", sa.Text, primary_key=True),
        *_texts("number", "type", "method_id", "contact_id", "channel_id", "order_id"),
        *_texts("stack_id", "list_id"),
        *_flags(
            "is_editable",
            "is_outbound",
            "is_listed",
            "is_finished",
            "is_in_transit",
            "is_complete",
            "is_overcomplete",
            "is_canceled",
        ),
        *_times("ship_at", "estimated_ship_at", "expected_at", "created_at", "updated_at"),
        *_bookkeeping(),
        schema=SCHEMA,
        comment="Afosto shipments (list shape; the detail's items and parcels are not fetched).",
    )
    _index("shipments", "number")
    _index("shipments", "contact_id")

    op.create_table(
        "parcels",
        sa.Column("id", sa.Text, primary_key=True),
        *_texts("number", "shipment_id"),
        *(
            sa.Column(name, sa.BigInteger)
            for name in ("weight", "length", "width", "height", "count")
        ),
        *_texts("tracking_code", "tracking_url", "position", "file_id", "label_reference"),
        sa.Column("label_requested_at", TS),
        *_flags("is_in_transit", "is_delivered", "is_outbound", "is_finished"),
        *_times("ship_at", "in_transit_at", "finished_at", "created_at", "updated_at"),
        *_bookkeeping(),
        schema=SCHEMA,
        comment="Afosto parcels, with their items in afosto.parcel_items.",
    )
    _index("parcels", "number")
    _index("parcels", "shipment_id")
    op.create_table(
        "parcel_items",
        sa.Column("parcel_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        *_texts("id", "sku"),
        sa.Column("quantity", sa.BigInteger),
        sa.Column("description", sa.Text),
        schema=SCHEMA,
        comment="The items in each parcel; replaced with the parcel when it changes.",
    )

    op.create_table(
        "price_groups",
        sa.Column("id", sa.Text, primary_key=True),
        *_texts("name", "currency"),
        sa.Column("is_including_vat", sa.Boolean),
        *_times("created_at", "updated_at", "deleted_at"),
        *_bookkeeping(),
        schema=SCHEMA,
        comment="Afosto price groups; a group disabled at the source keeps its row with deleted_at.",
    )
    op.create_table(
        "prices",
        sa.Column("id", sa.Text, primary_key=True),
        *_texts("price_group_id", "sku"),
        sa.Column("amount", sa.BigInteger),
        sa.Column("original_amount", sa.BigInteger),
        *_times("active_at", "created_at"),
        *_bookkeeping(),
        schema=SCHEMA,
        comment="Afosto prices per price group (historic and planned), amounts in minor units.",
    )
    _index("prices", "price_group_id")
    _index("prices", "sku")
    op.create_table(
        "price_vat",
        sa.Column("price_id", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("rate", sa.BigInteger),
        *_texts("country", "administrative_area"),
        schema=SCHEMA,
        comment="VAT lines of each price.",
    )


def downgrade() -> None:
    for table in (
        "price_vat",
        "prices",
        "price_groups",
        "parcel_items",
        "parcels",
        "shipments",
        "contacts",
    ):
        op.drop_table(table, schema=SCHEMA)
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
