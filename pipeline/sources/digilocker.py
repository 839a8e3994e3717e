"""DigiLocker meta APIs (SOURCES.md §5): POST forms signed with clientid + ts + hmac.

Lookup lists without timestamps or paging, read whole on every run: `issuers` is a snapshot
(an issuer missing from the answer is gone), `doctypes` are read per issuer (a crash resumes at
the next issuer), and `statistics` keeps one row per day it was read, so growth can be charted.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from pipeline.extract.auth import Auth, SignedForm
from pipeline.extract.paginators import SingleResponse
from pipeline.settings import SourceSettings
from pipeline.streams import (
    BIGINT,
    DATE,
    DATE_DDMMYYYY,
    TEXT,
    Column,
    Deletions,
    Incremental,
    Partitions,
    SourceSpec,
    Stream,
)


class DigiLockerSettings(SourceSettings):
    account_keys = ("client_id", "client_secret")

    base_url: str = "https://betaapi.digitallocker.gov.in/public"
    client_id: str
    client_secret: SecretStr
    hmac_encoding: Literal["hex", "base64"] = "hex"  # the digest's text form is undocumented
    ts_offset_seconds: int = Field(default=0, ge=-86_400, le=86_400)  # e.g. 19800 for IST


def _auth(settings: DigiLockerSettings) -> Auth:
    return SignedForm(
        settings.client_id,
        settings.client_secret.get_secret_value(),
        encoding=settings.hmac_encoding,
        ts_offset_seconds=settings.ts_offset_seconds,
    )


def _doctype_key(record: dict[str, Any], context: dict[str, Any]) -> str | None:
    doctype = record.get("doctype")
    return f"{context['orgid']}/{doctype}" if doctype else None


issuers = Stream(
    name="issuers",
    path="/oauth2/1/pull/issuers",
    method="POST",
    form={},
    paginator=lambda size: SingleResponse(records_path=("issuers",)),
    incremental=Incremental.FULL_SCAN,
    deletions=Deletions.SNAPSHOT,
    columns=(
        Column("orgid", TEXT, primary_key=True),
        Column("issuerid", TEXT, index=True),
        Column("name", TEXT),
        Column("description", TEXT),
        Column("categories", TEXT),
    ),
    description="DigiLocker issuers; one missing from an answer is marked deleted.",
)

doctypes = Stream(
    name="doctypes",
    path="/oauth2/1/pull/doctype",
    method="POST",
    form={"orgid": "{parent}"},
    paginator=lambda size: SingleResponse(records_path=("documents",)),
    incremental=Incremental.FULL_SCAN,
    deletions=Deletions.SNAPSHOT,
    partitions=Partitions(parent=issuers, column="orgid", key="orgid"),
    columns=(
        Column("key", TEXT, primary_key=True, derive=_doctype_key),
        Column("orgid", TEXT, index=True),
        Column("doctype", TEXT),
        Column("description", TEXT),
    ),
    description="Document types per issuer; key is orgid/doctype.",
)

statistics = Stream(
    name="statistics",
    path="/statistics/1/counts",
    method="POST",
    form={},
    multipart=True,
    paginator=lambda size: SingleResponse(whole_body=True),
    incremental=Incremental.FULL_SCAN,
    deletions=Deletions.NEVER,
    columns=(
        Column(
            "read_on", DATE, primary_key=True, derive=lambda r, ctx: ctx["run_date"].isoformat()
        ),
        Column("count_as_on", DATE_DDMMYYYY),
        Column("users", BIGINT),
        Column("authentic_documents", BIGINT),
        Column("issuers", BIGINT),
        Column("requestors", BIGINT),
    ),
    description="DigiLocker platform counts, one row per (UTC) day they were read.",
)

SOURCE = SourceSpec(
    name="digilocker",
    title="DigiLocker",
    settings_model=DigiLockerSettings,
    make_auth=_auth,
    streams=(issuers, doctypes, statistics),
)
