"""What the quarantine page shows, and the reasons the stream page counts: records that could
not be loaded, grouped and filtered by the kind of their reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.logs import secrets

QUARANTINE_ROWS = 100  # records per quarantine page
RAW_SHOWN = 10_000  # characters of a quarantined record shown

# A quarantine reason quotes the value it refused ("field 'updated_at': not an ISO-8601
# timestamp: 'yesterday'"); its kind, which pages group and filter by, is the reason with the
# values after ': ' or 'got ' replaced by an ellipsis (a cut-off quote included).
KIND_PATTERN = r"""((?::|got) )('[^']*('|$)|"[^"]*("|$)|-?[0-9][0-9.eE+-]*)"""
KIND_REPLACEMENT = r"\1…"
_KIND = "regexp_replace(reason, :kind_pattern, :kind_replacement, 'g')"
_KIND_PARAMS = {"kind_pattern": KIND_PATTERN, "kind_replacement": KIND_REPLACEMENT}


@dataclass(frozen=True)
class ReasonCount:
    reason: str
    records: int
    first: datetime
    last: datetime


_REASONS = sa.text(
    f"SELECT kind, count(*) AS n, min(received_at) AS first, max(received_at) AS last "
    f"FROM (SELECT {_KIND} AS kind, received_at FROM pipeline.quarantine WHERE stream = :key) q "
    "GROUP BY kind ORDER BY count(*) DESC, kind"
)


async def reason_counts(conn: AsyncConnection, key: str) -> list[ReasonCount]:
    result = await conn.execute(_REASONS, {"key": key, **_KIND_PARAMS})
    return [ReasonCount(r.kind, r.n, r.first, r.last) for r in result]


# ---- the page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantinedRecord:
    id: int
    stream: str
    record_key: str | None
    reason: str
    kind: str
    received_at: datetime
    raw: str
    raw_truncated: bool


@dataclass(frozen=True)
class StreamCount:
    stream: str
    records: int


@dataclass(frozen=True)
class QuarantinePage:
    stream: str | None
    reason: str | None
    streams: list[StreamCount]
    reasons: list[ReasonCount]  # of the chosen stream (every stream when none)
    matching: int
    records: list[QuarantinedRecord]
    next_before: int | None  # the `before` of the next (older) page


_STREAMS = sa.text(
    "SELECT stream, count(*) AS n FROM pipeline.quarantine GROUP BY stream ORDER BY stream"
)
_ALL_REASONS = sa.text(
    f"SELECT kind, count(*) AS n, min(received_at) AS first, max(received_at) AS last "
    f"FROM (SELECT {_KIND} AS kind, received_at FROM pipeline.quarantine) q "
    "GROUP BY kind ORDER BY count(*) DESC, kind"
)


async def quarantine_page(
    engine: AsyncEngine, stream: str | None, reason: str | None, before: int | None
) -> QuarantinePage:
    """Newest first, QUARANTINE_ROWS at a time (`before`: the id to continue below). `raw` is
    shown as stored, which the loader redacted, and redacted again with the secrets this
    process knows."""
    conditions, params = [], dict(_KIND_PARAMS)
    if stream:
        conditions.append("stream = :stream")
        params["stream"] = stream
    if reason:
        conditions.append(f"{_KIND} = :reason")
        params["reason"] = reason
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    if before is not None:  # 0 too: the page below id 0 is empty, not the first one
        conditions.append("id < :before")
    page_where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    async with engine.connect() as conn:
        streams = [StreamCount(r.stream, r.n) for r in await conn.execute(_STREAMS)]
        if stream:
            reasons = await reason_counts(conn, stream)
        else:
            reasons = [
                ReasonCount(r.kind, r.n, r.first, r.last)
                for r in await conn.execute(_ALL_REASONS, _KIND_PARAMS)
            ]
        matching = (
            await conn.execute(sa.text(f"SELECT count(*) FROM pipeline.quarantine {where}"), params)
        ).scalar_one()
        found = await conn.execute(
            sa.text(
                f"SELECT id, stream, record_key, reason, {_KIND} AS kind, received_at, "
                f"left(raw, {RAW_SHOWN + 1}) AS raw FROM pipeline.quarantine {page_where} "
                "ORDER BY id DESC LIMIT :limit"
            ),
            {**params, "before": before, "limit": QUARANTINE_ROWS + 1},
        )
        rows = list(found)
    records = [
        QuarantinedRecord(
            id=r.id,
            stream=r.stream,
            record_key=r.record_key,
            reason=secrets.redact(r.reason),
            kind=secrets.redact(r.kind),
            received_at=r.received_at,
            raw=secrets.redact(r.raw[:RAW_SHOWN]),
            raw_truncated=len(r.raw) > RAW_SHOWN,
        )
        for r in rows[:QUARANTINE_ROWS]
    ]
    return QuarantinePage(
        stream=stream,
        reason=reason,
        streams=streams,
        reasons=reasons,
        matching=matching,
        records=records,
        next_before=records[-1].id if len(rows) > QUARANTINE_ROWS else None,
    )
