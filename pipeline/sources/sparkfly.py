"""Sparkfly Credentials API (SOURCES.md §2): `GET /v1.0/credentials`, `X-Auth-Token` header.

The list has no time filter or sort, so the stream is a full scan, pages fetched concurrently
once `total_pages` is known ([ext] will_paginate: `page`, `per_page`). Each element wraps its
record: `{"credential": {...}, "errors": {}}`. The optional `member_id`, `offer_id` and
`store_id` filters narrow the list; a filtered stream keeps its own state and judges deletions
only among the rows its filter covers. `identifier` is the redeemable code: stored, never logged.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from pipeline.extract.auth import Auth, HeaderToken, TokenExchange
from pipeline.extract.paginators import PageNumberPages
from pipeline.settings import MAX_BIGINT, SourceSettings, StreamSettings
from pipeline.streams import (
    BIGINT,
    BIGINT_ARRAY,
    BOOLEAN,
    JSONB,
    TEXT,
    TIMESTAMPTZ,
    Column,
    Cursor,
    Filter,
    Incremental,
    SourceSpec,
    Stream,
)


class SparkflySettings(SourceSettings):
    account_keys = ("token", "identity", "key")

    base_url: str = "https://api.sparkfly.com"
    token: SecretStr | None = None
    identity: str | None = None
    key: SecretStr | None = None

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> SparkflySettings:
        exchange = self.identity is not None or self.key is not None
        if self.token is not None and exchange:
            raise ValueError("set either token or identity + key, not both")
        if self.token is None and (self.identity is None or self.key is None):
            raise ValueError("set token (X-Auth-Token) or identity + key (token exchange)")
        return self


class CredentialsSettings(StreamSettings):
    # Compared with bigint columns in the scan's scope: an id beyond 64 bits cannot be bound.
    member_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    offer_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)
    store_id: int | None = Field(default=None, ge=1, le=MAX_BIGINT)


def _auth(settings: SparkflySettings) -> Auth:
    if settings.token is not None:
        return HeaderToken(settings.token.get_secret_value(), "X-Auth-Token", "")
    assert settings.identity is not None and settings.key is not None
    return TokenExchange(
        f"{settings.base_url}/auth", settings.identity, settings.key.get_secret_value()
    )


credentials = Stream(
    name="credentials",
    path="/v1.0/credentials",
    detail_path="/v1.0/credentials/{id}",
    paginator=lambda size: PageNumberPages(
        page_size=size,
        page_param="page",
        size_param="per_page",
        records_path=("credentials",),
        total_pages_path=("total_pages",),
        next_page_path=None,
        current_page_path=("page",),
    ),
    record_path=("credential",),
    default_page_size=50,
    incremental=Incremental.FULL_SCAN,
    cursor=Cursor(("updated_at",)),
    settings_model=CredentialsSettings,
    filters=(
        Filter("member_id", "member_id", "t.member_id = {}"),
        Filter("offer_id", "offer_id", "{} = ANY(t.offer_ids)"),
        Filter("store_id", "store_id", "t.store_id = {}"),
    ),
    columns=(
        Column("id", BIGINT, primary_key=True),
        Column("account_id", BIGINT),
        Column("member_id", BIGINT, index=True),
        Column("store_id", BIGINT, index=True),
        Column("channel_id", BIGINT),
        Column("merchant_id", BIGINT),
        Column("offer_ids", BIGINT_ARRAY),
        Column("identifier", TEXT),
        Column("status", TEXT),
        Column("code_lifetime", BIGINT),
        Column("supports_barcode", BOOLEAN),
        Column("offer_name", TEXT),
        Column("merchant_name", TEXT),
        Column("location_address", TEXT),
        Column("url", TEXT),
        Column("annotations", JSONB),
        Column("redeemed_at", TIMESTAMPTZ),
        Column("voided_at", TIMESTAMPTZ),
        Column("created_at", TIMESTAMPTZ),
        Column("updated_at", TIMESTAMPTZ),
    ),
    description="Sparkfly credentials (redeemable codes in identifier), one row per credential.",
)

SOURCE = SourceSpec(
    name="sparkfly",
    title="Sparkfly",
    settings_model=SparkflySettings,
    make_auth=_auth,
    streams=(credentials,),
)
