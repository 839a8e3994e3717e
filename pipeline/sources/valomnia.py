"""Valomnia API v2.1 (SOURCES.md §4): authorities, filtered and sorted by `lastUpdated`.

The only source that can filter by time on the server, so the stream reads just what changed,
seeking by value. Auth is a Spring Security form login (session cookie) or a static header token.
"""

from __future__ import annotations

import re

from pydantic import SecretStr, field_validator, model_validator

from pipeline.extract.auth import Auth, FormLoginSession, HeaderToken
from pipeline.extract.paginators import OffsetPages, ValueSeekPages
from pipeline.settings import SourceSettings
from pipeline.streams import (
    BIGINT,
    TEXT,
    TIMESTAMPTZ,
    Column,
    Cursor,
    Incremental,
    SourceSpec,
    Stream,
)

_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ValomniaSettings(SourceSettings):
    account_keys = ("username", "password", "token")

    api_version: str = "v2.1"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    token_header: str = "Authorization"
    token_prefix: str = "Bearer "

    @field_validator("api_version")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        """The API root is `<base_url>/api/<api_version>`: a version with a `/` or `..` in it
        would move the root (`v2.1/../../admin`)."""
        if not _VERSION.fullmatch(value) or ".." in value:
            raise ValueError('must be one path segment like "v2.1" (letters, digits, . _ -)')
        return value

    @model_validator(mode="after")
    def _one_way_to_log_in(self) -> ValomniaSettings:
        has_login = self.username is not None or self.password is not None
        if self.token is not None and has_login:
            raise ValueError("set either token or username + password, not both")
        if self.token is None and (self.username is None or self.password is None):
            raise ValueError("set username and password (session login) or token")
        return self


def _auth(settings: ValomniaSettings) -> Auth:
    if settings.token is not None:
        return HeaderToken(
            settings.token.get_secret_value(), settings.token_header, settings.token_prefix
        )
    assert settings.username is not None and settings.password is not None
    return FormLoginSession(
        f"{settings.base_url}/j_spring_security_check",
        {
            "j_username": settings.username,
            "j_password": settings.password.get_secret_value(),
            "ajax": "true",
        },
        cookie_name="JSESSIONID",
    )


authorities = Stream(
    name="authorities",
    path="/authorities",
    detail_path="/authorities/{id}",
    paginator=lambda size: ValueSeekPages(
        page_size=size,
        cursor_field="lastUpdated",
        gte_param="lastUpdated_gte",
        gt_param="lastUpdated_gt",
        lte_param="lastUpdated_lte",
        offset_param="offset",
        size_param="max",
        records_path=("data",),
        sort_params={"sort": "lastUpdated", "order": "asc"},
    ),
    # Lists carry no delete signal: a reconcile reads every id (by offset, sorted by id) and
    # confirms absences on the detail endpoint.
    reconcile_paginator=lambda size: OffsetPages(
        page_size=size, sort_params={"sort": "id", "order": "asc"}
    ),
    default_page_size=100,
    incremental=Incremental.SORTED_FILTER,
    cursor=Cursor(("lastUpdated",)),
    columns=(
        Column("id", BIGINT, primary_key=True),
        Column("name", TEXT),
        Column("date_created", TIMESTAMPTZ, path="dateCreated"),
        Column("last_updated", TIMESTAMPTZ, path="lastUpdated", index=True),
    ),
    description="Authorities (roles), read incrementally by lastUpdated.",
)

SOURCE = SourceSpec(
    name="valomnia",
    title="Valomnia",
    settings_model=ValomniaSettings,
    make_auth=_auth,
    streams=(authorities,),
    api_root=lambda settings: f"{settings.base_url}/api/{settings.api_version}",
)
