"""Afosto (SOURCES.md §1): contacts, shipments, parcels and prices, over one Bearer JWT.

Every list pages with `x-page` / `x-page-size` request headers and answers a bare JSON array;
most tell the record count in `x-count` (contacts do not). No list can be filtered or sorted by
time, so every stream is a full scan, written only where content changed. Prices have no
`updated_at` at all and live per price group: they are scanned group by group.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from pipeline.extract.auth import Auth, bearer
from pipeline.extract.paginators import HeaderPages, Paginator
from pipeline.settings import SourceSettings
from pipeline.streams import (
    BIGINT,
    BOOLEAN,
    TEXT,
    TEXT_ARRAY,
    TIMESTAMPTZ,
    ChildTable,
    Column,
    Cursor,
    Incremental,
    Partitions,
    SourceSpec,
    Stream,
)


class AfostoSettings(SourceSettings):
    base_url: str = "https://api.afosto.io"
    token: SecretStr


def _auth(settings: AfostoSettings) -> Auth:
    return bearer(settings.token.get_secret_value())


def _counted(size: int) -> Paginator:
    return HeaderPages(page_size=size, count_header="x-count")


def _uncounted(size: int) -> Paginator:
    return HeaderPages(page_size=size, count_header=None)


def _flags(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, BOOLEAN) for name in names)


def _times(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, TIMESTAMPTZ) for name in names)


UPDATED = Cursor(("updated_at",))


def _afosto_stream(name: str, path: str, *columns: Column, **facts: Any) -> Stream:
    """What every Afosto list shares: a string `id` key, header pages (counted unless said
    otherwise), 100 records a page, a full scan, `updated_at` as the change time."""
    defaults: dict[str, Any] = {
        "paginator": _counted,
        "default_page_size": 100,
        "incremental": Incremental.FULL_SCAN,
        "cursor": UPDATED,
    }
    return Stream(
        name=name,
        path=path,
        columns=(Column("id", TEXT, primary_key=True), *columns),
        **{**defaults, **facts},
    )


contacts = _afosto_stream(
    "contacts",
    "/rel/contacts",
    Column("version", TEXT),
    Column("email", TEXT, index=True),
    Column("given_name", TEXT),
    Column("additional_name", TEXT),
    Column("family_name", TEXT),
    Column("is_guest", BOOLEAN),
    Column("audience", TEXT),
    Column("tags", TEXT_ARRAY),
    Column("organisation_id", TEXT, path="organisations.primary.id"),
    Column("organisation_name", TEXT, path="organisations.primary.name"),
    Column("billing_country_code", TEXT, path="billing.primary.country_code"),
    Column("billing_locality", TEXT, path="billing.primary.locality"),
    Column("billing_postal_code", TEXT, path="billing.primary.postal_code"),
    *_times("created_at", "updated_at", "deleted_at"),
    detail_path="/rel/contacts/{id}",
    paginator=_uncounted,  # the contacts list declares no x-count: read until an empty page
    # updated_at is declared by the schema but absent from the examples: content decides anyway
    description="Afosto contacts (relations), with the primary organisation and billing place.",
)

shipments = _afosto_stream(
    "shipments",
    "/lcs/shipments",
    Column("number", TEXT, index=True),
    Column("type", TEXT),
    Column("method_id", TEXT),
    Column("contact_id", TEXT, index=True),
    Column("channel_id", TEXT),
    Column("order_id", TEXT),
    Column("stack_id", TEXT),
    Column("list_id", TEXT),
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
    detail_path="/lcs/shipments/{id}",
    detail_matches_list=False,  # the detail adds items and parcels: a liveness proof only
    description="Afosto shipments (list shape; the detail's items and parcels are not fetched).",
)

parcels = _afosto_stream(
    "parcels",
    "/lcs/parcels",
    Column("number", TEXT, index=True),
    Column("shipment_id", TEXT, index=True),
    Column("weight", BIGINT),
    Column("length", BIGINT),
    Column("width", BIGINT),
    Column("height", BIGINT),
    Column("count", BIGINT),
    Column("tracking_code", TEXT),
    Column("tracking_url", TEXT),
    Column("position", TEXT),
    Column("file_id", TEXT),
    Column("label_reference", TEXT, path="label.reference"),
    Column("label_requested_at", TIMESTAMPTZ, path="label.requested_at"),
    *_flags("is_in_transit", "is_delivered", "is_outbound", "is_finished"),
    *_times("ship_at", "in_transit_at", "finished_at", "created_at", "updated_at"),
    detail_path="/lcs/parcels/{id}",
    children=(
        ChildTable(
            "parcel_items",
            path="items",
            parent_column="parcel_id",
            columns=(
                Column("id", TEXT),
                Column("sku", TEXT),
                Column("quantity", BIGINT),
                Column("description", TEXT),
            ),
            description="The items in each parcel; replaced with the parcel when it changes.",
        ),
    ),
    description="Afosto parcels, with their items in afosto.parcel_items.",
)

price_groups = _afosto_stream(
    "price_groups",
    "/cat/groups",
    Column("name", TEXT),
    Column("currency", TEXT),
    Column("is_including_vat", BOOLEAN),
    *_times("created_at", "updated_at", "deleted_at"),
    detail_path="/cat/groups/{id}",
    description="Afosto price groups; a group disabled at the source keeps its row with deleted_at.",
)

prices = _afosto_stream(
    "prices",
    "/cat/groups/{parent}/prices",
    Column("price_group_id", TEXT, index=True),
    Column("sku", TEXT, index=True),
    Column("amount", BIGINT),
    Column("original_amount", BIGINT),
    *_times("active_at", "created_at"),
    cursor=None,  # prices have no updated_at and are edited in place: content decides
    partitions=Partitions(parent=price_groups, column="price_group_id"),
    children=(
        ChildTable(
            "price_vat",
            path="vat",
            parent_column="price_id",
            columns=(
                Column("rate", BIGINT),
                Column("country", TEXT),
                Column("administrative_area", TEXT),
            ),
            description="VAT lines of each price.",
        ),
    ),
    description="Afosto prices per price group (historic and planned), amounts in minor units.",
)

SOURCE = SourceSpec(
    name="afosto",
    title="Afosto",
    settings_model=AfostoSettings,
    make_auth=_auth,
    streams=(contacts, shipments, parcels, prices),
)
