"""Many accounts of one API: every table gets `_source`, the instance a row was read from.

Instances of one source type share its tables (`[sources.afosto_nl] type = "afosto"`), told
apart by `_source`, the first column of every primary key (child tables too), so BI can
compare shops in one query. Existing rows were read by the instance named after the type
(`[sources.afosto]`), so they get `_source = '<type>'`. The analytics views show it as
`source`; child views join their parent on it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (schema, table, key columns after _source): frozen as of this revision.
TABLES = [
    ("afosto", "contacts", "id"),
    ("afosto", "shipments", "id"),
    ("afosto", "parcels", "id"),
    ("afosto", "parcel_items", "parcel_id, position"),
    ("afosto", "price_groups", "id"),
    ("afosto", "prices", "id"),
    ("afosto", "price_vat", "price_id, position"),
    ("digilocker", "issuers", "orgid"),
    ("digilocker", "doctypes", "key"),
    ("digilocker", "statistics", "read_on"),
    ("soho", "customers", "id"),
    ("sparkfly", "credentials", "id"),
    ("valomnia", "authorities", "id"),
]

# (view, table, columns) as revision 0004 made them; recreated with `source` first.
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

# (view, table, columns, parent table, join on the parent's key)
CHILD_VIEWS = [
    (
        "afosto_parcel_items",
        "afosto.parcel_items",
        "parcel_id, position, id, sku, quantity, description",
        "afosto.parcels",
        "p.id = c.parcel_id",
    ),
    (
        "afosto_price_vat",
        "afosto.price_vat",
        "price_id, position, rate, country, administrative_area",
        "afosto.prices",
        "p.id = c.price_id",
    ),
]


def _drop_views() -> None:
    for view, *_ in [*CHILD_VIEWS, *STREAM_VIEWS]:
        op.execute(f"DROP VIEW IF EXISTS analytics.{view}")


def upgrade() -> None:
    _drop_views()
    for schema, table, key in TABLES:
        op.execute(
            f"ALTER TABLE {schema}.{table} ADD COLUMN _source text NOT NULL DEFAULT '{schema}'"
        )
        op.execute(f"ALTER TABLE {schema}.{table} ALTER COLUMN _source DROP DEFAULT")
        op.execute(f"ALTER TABLE {schema}.{table} DROP CONSTRAINT {table}_pkey")
        op.execute(
            f"ALTER TABLE {schema}.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (_source, {key})"
        )
    for view, table, columns in STREAM_VIEWS:
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT _source AS source, {columns} FROM {table} "
            "WHERE _deleted_at IS NULL"
        )
    for view, table, columns, parent, join in CHILD_VIEWS:
        prefixed = ", ".join(f"c.{c.strip()}" for c in columns.split(","))
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT c._source AS source, {prefixed} "
            f"FROM {table} c JOIN {parent} p ON p._source = c._source AND {join} "
            "WHERE p._deleted_at IS NULL"
        )


def downgrade() -> None:
    """Back to one account per type: rows of other instances cannot be kept under their key."""
    _drop_views()
    for schema, table, key in TABLES:
        op.execute(f"DELETE FROM {schema}.{table} WHERE _source <> '{schema}'")
        op.execute(f"ALTER TABLE {schema}.{table} DROP CONSTRAINT {table}_pkey")
        op.execute(f"ALTER TABLE {schema}.{table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})")
        op.execute(f"ALTER TABLE {schema}.{table} DROP COLUMN _source")
    for view, table, columns in STREAM_VIEWS:
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT {columns} FROM {table} "
            "WHERE _deleted_at IS NULL"
        )
    for view, table, _columns, parent, join in CHILD_VIEWS:
        op.execute(
            f"CREATE VIEW analytics.{view} AS SELECT c.* FROM {table} c "
            f"JOIN {parent} p ON {join} WHERE p._deleted_at IS NULL"
        )
