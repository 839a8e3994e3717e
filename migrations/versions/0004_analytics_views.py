"""BI views: schema `analytics`, one view per table, live rows only, no bookkeeping columns.

Analysts query `analytics.<source>_<table>` and never see rows deleted at the source or the
`_`-prefixed machinery. Child-table views keep only the elements of live parents.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# (view, table, columns): frozen as of this revision.
STREAM_VIEWS = [
    (
        "afosto_contacts",
        "afosto.contacts",
        "id, version, email, given_name, additional_name, family_name, is_guest, audience, tags, organisation_id, organisation_name, billing_country_code, billing_locality, billing_postal_code, created_at, updated_at, deleted_at, data",
    ),
    (
        "afosto_shipments",
        "afosto.shipments",
        "id, number, type, method_id, contact_id, channel_id, order_id, stack_id, list_id, is_editable, is_outbound, is_listed, is_finished, is_in_transit, is_complete, is_overcomplete, is_canceled, ship_at, estimated_ship_at, expected_at, created_at, updated_at, data",
    ),
    (
        "afosto_parcels",
        "afosto.parcels",
        "id, number, shipment_id, weight, length, width, height, count, tracking_code, tracking_url, position, file_id, label_reference, label_requested_at, is_in_transit, is_delivered, is_outbound, is_finished, ship_at, in_transit_at, finished_at, created_at, updated_at, data",
    ),
    (
        "afosto_price_groups",
        "afosto.price_groups",
        "id, name, currency, is_including_vat, created_at, updated_at, deleted_at, data",
    ),
    (
        "afosto_prices",
        "afosto.prices",
        "id, price_group_id, sku, amount, original_amount, active_at, created_at, data",
    ),
    (
        "digilocker_issuers",
        "digilocker.issuers",
        "orgid, issuerid, name, description, categories, data",
    ),
    ("digilocker_doctypes", "digilocker.doctypes", "key, orgid, doctype, description, data"),
    (
        "digilocker_statistics",
        "digilocker.statistics",
        "read_on, count_as_on, users, authentic_documents, issuers, requestors, data",
    ),
    (
        "soho_customers",
        "soho.customers",
        "id, email, created_at, updated_at, profile_id, organisation_id, title, first_name, last_name, birth_date, phone, street, building, building_addon, postal_code, city, language, profile_created_at, profile_updated_at, data",
    ),
    (
        "sparkfly_credentials",
        "sparkfly.credentials",
        "id, account_id, member_id, store_id, channel_id, merchant_id, offer_ids, identifier, status, code_lifetime, supports_barcode, offer_name, merchant_name, location_address, url, annotations, redeemed_at, voided_at, created_at, updated_at, data",
    ),
    ("valomnia_authorities", "valomnia.authorities", "id, name, date_created, last_updated, data"),
]

# (view, table, parent table, join condition)
CHILD_VIEWS = [
    ("afosto_parcel_items", "afosto.parcel_items", "afosto.parcels", "p.id = c.parcel_id"),
    ("afosto_price_vat", "afosto.price_vat", "afosto.prices", "p.id = c.price_id"),
]


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    for view, table, columns in STREAM_VIEWS:
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT {columns} FROM {table} "
            "WHERE _deleted_at IS NULL"
        )
    for view, table, parent, join in CHILD_VIEWS:
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT c.* FROM {table} c "
            f"JOIN {parent} p ON {join} WHERE p._deleted_at IS NULL"
        )


def downgrade() -> None:
    for view, *_ in [*STREAM_VIEWS, *CHILD_VIEWS]:
        op.execute(f"DROP VIEW IF EXISTS analytics.{view}")
    op.execute("DROP SCHEMA IF EXISTS analytics")
