"""Enbro Soho (SOURCES.md §3): customers, paged by `page`/`per` (at most 25), Bearer token.

No filter or sort exists, so the stream is a full scan made fast by concurrent pages; the
customer's change time is the later of its own and its profile's `updated_at`.
"""

from __future__ import annotations

from pydantic import SecretStr

from pipeline.extract.auth import Auth, bearer
from pipeline.extract.paginators import PageNumberPages
from pipeline.settings import SourceSettings
from pipeline.streams import (
    BIGINT,
    DATE,
    TEXT,
    TIMESTAMPTZ,
    Column,
    ColumnType,
    Cursor,
    Incremental,
    SourceSpec,
    Stream,
)


class SohoSettings(SourceSettings):
    token: SecretStr


def _auth(settings: SohoSettings) -> Auth:
    return bearer(settings.token.get_secret_value())


def _profile(name: str, type_: ColumnType = TEXT) -> Column:
    return Column(name, type_, path=f"profile.{name}")


customers = Stream(
    name="customers",
    path="/customers",
    detail_path="/customers/{id}",
    paginator=lambda size: PageNumberPages(page_size=size, page_param="page", size_param="per"),
    default_page_size=25,
    max_page_size=25,
    incremental=Incremental.FULL_SCAN,
    cursor=Cursor(("updated_at", "profile.updated_at")),
    columns=(
        Column("id", BIGINT, primary_key=True),
        Column("email", TEXT, index=True),
        Column("created_at", TIMESTAMPTZ),
        Column("updated_at", TIMESTAMPTZ),
        Column("profile_id", BIGINT, path="profile.id"),
        _profile("organisation_id", BIGINT),
        _profile("title"),
        _profile("first_name"),
        _profile("last_name"),
        _profile("birth_date", DATE),
        _profile("phone"),
        _profile("street"),
        _profile("building"),
        _profile("building_addon"),
        _profile("postal_code"),
        _profile("city"),
        _profile("language"),
        Column("profile_created_at", TIMESTAMPTZ, path="profile.created_at"),
        Column("profile_updated_at", TIMESTAMPTZ, path="profile.updated_at"),
    ),
    description="Customers of the token's organisation, with their profile flattened.",
)

SOURCE = SourceSpec(
    name="soho",
    title="Enbro Soho",
    settings_model=SohoSettings,
    make_auth=_auth,
    streams=(customers,),
)
