"""Sparkfly Credentials API simulator: `/v1.0/credentials`, will_paginate-style body paging.

Why it matters to a client: the list is offset-paged over live, id-ordered data with only
`member_id`/`offer_id`/`store_id` filters, so there is no server-side incremental filter, a
delete between two page requests pulls a record onto a page the client has already read, and
the end of the scan is known only from `total_pages` (or an empty page). Auth is a token in
`X-Auth-Token`, exchanged at `GET /auth` and valid for 24 hours, so a long sync must
re-authenticate on a 401. The simulator does exactly that and nothing smarter.

Documented (seed 001): routes, statuses, the `X-Auth-Token` header, JSON in and out.
[ext] (SOURCES §2, the upstream `sparkfly_openapi.yaml`): the `/auth` exchange, the list
envelope `page/per_page/total_entries/total_pages` with wrapped elements, the record shape,
`{"error": ...}` bodies, the `.json` URI extension, `X-Runtime`, the eligibility shape.
Everything else is `[inferred]` and mostly a constructor parameter.

Storage: a dict by id plus the sorted id list, so an unfiltered page costs O(log n + page);
filtered lists scan once and are cached until the next change.
"""

from __future__ import annotations

import bisect
import calendar
import copy
import hashlib
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from . import fakedata
from .core import (
    CONTROL_PREFIX,
    LoggedRequest,
    Simulator,
    account_secret,
    format_seconds,
    parse_at,
    reason,
)
from .fakedata import between
from .soho import ruby_to_i
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream, Size

API = "/v1.0"
BASE = f"{API}/credentials"
# [inferred] Seeded history ends here unless the clock is earlier (same seed, same data).
DEFAULT_HISTORY_END = datetime(2024, 1, 1, tzinfo=UTC)
# [ext] tokens look like the upstream examples: 64 lowercase hex characters.
DEFAULT_TOKEN = "5f0c3b8e2a9d47c1b6e08f3a2d5c9e7b1a4f6d8c0e2b4a6c8e0f1d3b5a7c9e2f"
DEFAULT_IDENTITY = "sandbox-identity"
DEFAULT_KEY = "sandbox-key-8c1f4e2a9b7d3605"
AUTH_PATH = "/auth"
TOKEN_TTL_SECONDS = 24 * 3600  # [ext] "Tokens will be valid for 24 hours"
FILTERS = ("member_id", "offer_id", "store_id")
STATUSES = ("open", "redeemed", "voided")
NOT_FOUND = "Credential was not found by id"  # documented (001:248)
CHANNEL_REQUIRED = "channel_id is required"  # [ext] the documented create example
MEMBER_REQUIRED = "Member can't be blank"  # [ext] the validations table
# [inferred] Rails' defaults for the documented response headers.
CACHE_OK = "max-age=0, private, must-revalidate"
CACHE_ERROR = "no-cache"
UA_COMPATIBLE = "IE=Edge,chrome=1"
_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_CURRENT: ContextVar[LoggedRequest | None] = ContextVar("sparkfly_request", default=None)


class ApiError(Exception):
    """An error answer raised from inside a handler: `{"error": ..., ["message": ...]}`."""

    def __init__(self, status: int, error: str, message: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.message = message

    def body(self) -> dict[str, str]:
        if self.message is None:
            return {"error": self.error}
        return {"error": self.error, "message": self.message}


class Merchant(NamedTuple):
    id: int
    name: str


class Offer(NamedTuple):
    id: int
    name: str
    merchant_id: int


class Store(NamedTuple):
    id: int
    address: str
    merchant_id: int


def epoch_s(moment: datetime) -> int:
    return calendar.timegm(moment.astimezone(UTC).utctimetuple())


def format_s(seconds: int) -> str:
    """`2013-09-16T18:41:13Z`: seconds and `Z`, as every Sparkfly timestamp [ext]."""
    return format_seconds(seconds) + "Z"


def _last(query: MultiDictProxy[str], key: str) -> str | None:
    """[inferred] Rails keeps the last value of a repeated scalar parameter."""
    values = query.getall(key, [])
    return values[-1] if values else None


def _strict_int(name: str, value: Any) -> int:
    """An integer from JSON or a query string; anything else is a 400 [inferred]."""
    if isinstance(value, bool):
        raise _invalid(name, value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    raise _invalid(name, value)


def _invalid(name: str, value: Any) -> ApiError:
    return ApiError(400, f"{name} is invalid", f"{name} must be an integer, got {value!r}")


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to hand out: the two mutable fields are copied too."""
    out = dict(record)
    out["offer_ids"] = list(record["offer_ids"])
    annotations = record["annotations"]
    out["annotations"] = copy.deepcopy(annotations) if annotations else {}
    return out


class SparkflySimulator(Simulator):
    """The Sparkfly credentials resource of one account (the token's).

    Python API for tests: `truth`, `get`, `insert`, `update`, `delete`, `redeem`, `void`,
    `mutate_random`, `issue_token`, `expire_tokens`, `token`. Records are kept in the exact
    (unwrapped) shape served; the list and detail routes wrap them as `{"credential": ...}`.
    """

    name: ClassVar[str] = "sparkfly"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"

    def __init__(
        self,
        *,
        credentials: int = 100,
        seed: int = 1,
        auth_token: str | None = DEFAULT_TOKEN,
        identity: str = DEFAULT_IDENTITY,
        key: str = DEFAULT_KEY,
        default_per_page: int = 50,
        max_per_page: int = 100,
        members: int | None = None,
        offers: int | None = None,
        stores: int | None = None,
        merchants: int | None = None,
        channels: int = 3,
        account_id: int = 5,
        token_ttl_seconds: float = TOKEN_TTL_SECONDS,
        url_base: str = "https://mp-sandbox.sparkfly.test",
        first_id: int = 1,
        history_end: datetime | None = None,
        history_days: float = 730.0,
        **core: Any,
    ) -> None:
        super().__init__(seed=seed, **core)
        self._static_token = auth_token
        self._static_revoked = False
        self.identity = identity
        self.key = key
        # [inferred] will_paginate's per_page; [ext] every upstream example shows 50.
        self.default_per_page = default_per_page
        # [inferred] no maximum is documented; larger values are clamped silently.
        self.max_per_page = max_per_page
        self.account_id = account_id  # [ext] the create example's account_id
        self.token_ttl_seconds = token_ttl_seconds
        self.url_base = url_base.rstrip("/")
        self.auth_count = 0
        self._tokens: dict[str, datetime] = {}
        self._token_rng = random.Random(seed * 104_729 + 7)
        self._request_rng = random.Random(seed * 7_919 + 11)
        self._data_rng = random.Random(seed)
        self._records: dict[int, dict[str, Any]] = {}
        self._ids: list[int] = []
        self._identifiers: set[str] = set()
        self._cache: dict[tuple[int | None, ...], list[int]] = {}
        self._next_id = first_id
        # [inferred] sizes of the catalogue the credentials point into: enough sharing that
        # every filter returns a proper subset.
        members = members if members is not None else max(3, credentials // 4)
        offers = offers if offers is not None else max(3, min(40, credentials // 10))
        stores = stores if stores is not None else max(3, min(500, credentials // 20))
        merchants = merchants if merchants is not None else min(8, offers, stores)
        if min(members, offers, stores, merchants, channels) < 1:
            raise ValueError("members, offers, stores, merchants and channels must be >= 1")
        self._build_catalogue(members, offers, stores, min(merchants, offers, stores), channels)
        end = history_end or min(DEFAULT_HISTORY_END, self.clock())
        self._seed_credentials(credentials, epoch_s(end), int(history_days * 86_400))
        self.on_request(_remember_request)

    # -- seeded data ---------------------------------------------------------------------

    def _build_catalogue(
        self, members: int, offers: int, stores: int, merchants: int, channels: int
    ) -> None:
        """[inferred] id ranges echo the upstream examples (member 1009, offer 1701, store 1,
        merchant 251, channel 456). Offers and stores each belong to a merchant."""
        rng = self._data_rng
        self.member_ids = list(range(1001, 1001 + members))
        self.channel_ids = list(range(456, 456 + channels))
        self.merchants = {251 + i: Merchant(251 + i, fakedata.brand(rng)) for i in range(merchants)}
        merchant_ids = self._merchant_ids = list(self.merchants)
        self.offers = {
            1701 + i: Offer(1701 + i, fakedata.offer_title(rng), merchant_ids[i % merchants])
            for i in range(offers)
        }
        self.stores: dict[int, Store] = {}
        for i in range(stores):
            address = (
                f"{between(rng, 1, 9999)} {fakedata.thoroughfare(rng)}, "
                f"{fakedata.city(rng)} {fakedata.postal_code(rng)}"
            )
            self.stores[1 + i] = Store(1 + i, address, merchant_ids[i % merchants])
        self._offers_of = {
            m: [o for o in self.offers.values() if o.merchant_id == m] for m in self.merchants
        }
        self._stores_of = {
            m: [s for s in self.stores.values() if s.merchant_id == m] for m in self.merchants
        }

    def _seed_credentials(self, count: int, end: int, span: int) -> None:
        """Creation times spread over the history; ids ascend with them, with gaps left by
        long-gone records. Redemptions, voids and annotation edits happen later."""
        rng = self._data_rng
        rand = rng.random
        start = end - span
        created = sorted(start + int(rand() * span) for _ in range(count))
        next_id = self._next_id
        for made in created:
            if rand() < 0.05:
                next_id += between(rng, 1, 4)
            self._records[next_id] = self._new_record(rng, next_id, made, history_end=end)
            next_id += 1
        self._ids = list(self._records)  # ascending: ids were drawn in order
        self._next_id = next_id

    def _new_record(
        self,
        rng: random.Random,
        credential_id: int,
        created: int,
        *,
        history_end: int | None = None,
    ) -> dict[str, Any]:
        """One credential in the served key order ([ext] the create example, then status).

        [inferred] about 10% have no offers attached: `identifier`, `offer_ids`, store and
        merchant fields are then null/empty, as in the upstream create example. With
        `history_end`, the record may have been redeemed, voided or edited since.
        """
        rand = rng.random
        offer_ids: list[int] = []
        store: Store | None = None
        merchant: Merchant | None = None
        offer_name = identifier = url = None
        code_lifetime: int | None = None
        supports_barcode = False
        if rand() >= 0.1:
            merchant = self.merchants[self._merchant_ids[int(rand() * len(self._merchant_ids))]]
            offers = self._offers_of[merchant.id]
            first = offers[int(rand() * len(offers))]
            offer_ids.append(first.id)
            offer_name = first.name
            if len(offers) > 1 and rand() < 0.1:
                second = offers[int(rand() * len(offers))]
                if second.id != first.id:
                    offer_ids.append(second.id)
            if rand() >= 0.1:  # [ext] "store id is optional"
                stores = self._stores_of[merchant.id]
                store = stores[int(rand() * len(stores))]
            identifier = self._new_identifier(rng)
            # [inferred] a landing-page URL per code, on a reserved (.test) host.
            url = f"{self.url_base}/{identifier}"
            # [inferred] lifetimes in seconds; most codes render as barcodes too.
            code_lifetime = _LIFETIMES[int(rand() * len(_LIFETIMES))]
            supports_barcode = rand() < 0.6
        roll = rand()
        if roll < 0.75:
            annotations: dict[str, Any] = {}
        elif roll < 0.9:
            annotations = {"source": "pos"}
        else:
            # [ext] "conv_ids" annotations feed the channel's conversion callback.
            annotations = {"source": "app", "conv_ids": {"click_id": fakedata.hex_token(rng, 16)}}
        stamp = format_s(created)
        record: dict[str, Any] = {
            "id": credential_id,
            "account_id": self.account_id,
            "created_at": stamp,
            "updated_at": stamp,
            "identifier": identifier,
            "member_id": self.member_ids[int(rand() * len(self.member_ids))],
            "store_id": store.id if store else None,
            "channel_id": self.channel_ids[int(rand() * len(self.channel_ids))],
            "offer_ids": offer_ids,
            "annotations": annotations,
            "code_lifetime": code_lifetime,
            "supports_barcode": supports_barcode,
            "merchant_id": merchant.id if merchant else None,
            "offer_name": offer_name,
            "merchant_name": merchant.name if merchant else None,
            "location_address": store.address if store else None,
            "url": url,
            "status": "open",
            "redeemed_at": None,
            "voided_at": None,
        }
        if history_end is not None and history_end > created:
            self._seed_history(rng, record, created, history_end)
        return record

    def _seed_history(
        self, rng: random.Random, record: dict[str, Any], created: int, end: int
    ) -> None:
        """[inferred] of the credentials with offers, ~20% were redeemed and ~8% voided;
        ~15% of all were touched later (`updated_at` moves, no served field changes, as
        when a column the API does not expose is edited)."""
        rand = rng.random
        updated = created
        if record["offer_ids"]:
            roll = rand()
            if roll < 0.28:
                moment = created + 1 + int(rand() * max(0, end - created - 1))
                if roll < 0.2:
                    record["status"], record["redeemed_at"] = "redeemed", format_s(moment)
                else:
                    record["status"], record["voided_at"] = "voided", format_s(moment)
                updated = moment
        if rand() < 0.15:
            updated = max(updated, created + 1 + int(rand() * max(0, end - created - 1)))
        if updated != created:
            record["updated_at"] = format_s(updated)

    def _derive(self, record: dict[str, Any], rng: random.Random) -> None:
        """Fill the denormalised fields from `offer_ids` and `store_id` ([ext] the first
        offer names the credential; [inferred] the merchant is the first offer's, else the
        store's). Attaching offers to a credential without an identifier generates one
        ([ext] "identifier is null because there are no associated offers yet")."""
        offers = [self.offers[o] for o in record["offer_ids"] if o in self.offers]
        store = self.stores.get(record["store_id"]) if record["store_id"] is not None else None
        merchant_id = offers[0].merchant_id if offers else store.merchant_id if store else None
        merchant = self.merchants.get(merchant_id) if merchant_id is not None else None
        record["merchant_id"] = merchant.id if merchant else None
        record["offer_name"] = offers[0].name if offers else None
        record["merchant_name"] = merchant.name if merchant else None
        record["location_address"] = store.address if store else None
        if record["offer_ids"] and record["identifier"] is None:
            record["identifier"] = self._new_identifier(rng)
        identifier = record["identifier"]
        record["url"] = f"{self.url_base}/{identifier}" if identifier else None

    def _new_identifier(self, rng: random.Random) -> str:
        while True:
            code = fakedata.redemption_code(rng)
            if code not in self._identifiers:
                self._identifiers.add(code)
                return code

    def _changed(self) -> None:
        self._cache.clear()

    # -- Python API ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    @property
    def token(self) -> str | None:
        """The configured `auth_token`: valid until `expire_tokens(static=True)`."""
        return self._static_token

    def truth(
        self,
        *,
        member_id: int | None = None,
        offer_id: int | None = None,
        store_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every credential, unwrapped, in server order (id ascending), filtered exactly like
        the list endpoint; copies."""
        records = self._records
        return [_copy(records[i]) for i in self._select(member_id, offer_id, store_id)]

    def get(self, credential_id: int) -> dict[str, Any] | None:
        record = self._records.get(credential_id)
        return _copy(record) if record is not None else None

    def _stamp(self, at: datetime | None) -> str:
        return format_s(epoch_s(at if at is not None else self.clock()))

    def insert(self, *, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
        """Create a credential as `POST` would; `overrides` replace generated fields.

        Overriding `offer_ids` or `store_id` re-derives the offer, merchant and store fields
        (unless those are overridden too). The id is the next in sequence unless `id=` is
        given; ids are never reused. Both timestamps are `at` (or the clock), in seconds.
        """
        credential_id = int(overrides.pop("id", None) or self._next_id)
        if credential_id in self._records:
            raise ValueError(f"credential {credential_id} already exists")
        rng = self._data_rng
        record = self._new_record(rng, credential_id, epoch_s(at or self.clock()))
        if "offer_ids" in overrides:
            # The generated code belonged to the generated offers: start over.
            record["identifier"] = None
            if overrides["offer_ids"]:
                record["code_lifetime"] = record["code_lifetime"] or 3600  # [inferred]
            else:
                record["code_lifetime"], record["supports_barcode"] = None, False
        for field in ("account_id", "created_at"):  # fixed after creation, free here
            if field in overrides:
                record[field] = overrides.pop(field)
        overrides.setdefault("updated_at", record["created_at"])
        self._apply(record, overrides, rng)
        self._store(record)
        return _copy(record)

    def _apply(self, record: dict[str, Any], changes: dict[str, Any], rng: random.Random) -> None:
        for field in ("id", "account_id", "created_at"):
            if field in changes:
                raise ValueError(f"{field} cannot be changed")
        if "offer_ids" in changes:
            changes["offer_ids"] = [int(o) for o in changes["offer_ids"] or []]
        if "annotations" in changes and changes["annotations"] is None:
            changes["annotations"] = {}
        record.update(changes)
        if "offer_ids" in changes or "store_id" in changes:
            self._derive(record, rng)
            record.update({k: changes[k] for k in _DERIVED if k in changes})  # explicit wins
        if record.get("identifier"):
            self._identifiers.add(record["identifier"])

    def _store(self, record: dict[str, Any]) -> None:
        credential_id = record["id"]
        if credential_id not in self._records:
            bisect.insort(self._ids, credential_id)
        self._records[credential_id] = record
        self._next_id = max(self._next_id, credential_id + 1)
        self._changed()

    def update(
        self, credential_id: int, *, at: datetime | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Change fields and bump `updated_at` to `at` (or the clock), in seconds; a bare call
        touches. Raises KeyError when absent."""
        record = self._records[credential_id]
        changes.setdefault("updated_at", self._stamp(at))
        self._apply(record, changes, self._data_rng)
        self._changed()
        return _copy(record)

    def delete(self, credential_id: int) -> dict[str, Any]:
        """Hard delete (the API has no tombstones); raises KeyError when absent."""
        record = self._records.pop(credential_id)
        del self._ids[bisect.bisect_left(self._ids, credential_id)]
        self._changed()
        return record

    def redeem(self, credential_id: int, *, at: datetime | None = None) -> dict[str, Any]:
        """Mark redeemed now (or `at`). [inferred] Redeeming a redeemed credential changes
        nothing; a voided one or one without offers raises ValueError."""
        record = self._records[credential_id]
        if record["status"] == "redeemed":
            return _copy(record)
        if record["status"] == "voided":
            raise ValueError("Credential has been voided")
        if not record["offer_ids"]:
            raise ValueError("Credential has no offers to redeem")
        stamp = self._stamp(at)
        return self.update(credential_id, status="redeemed", redeemed_at=stamp, updated_at=stamp)

    def void(self, credential_id: int, *, at: datetime | None = None) -> dict[str, Any]:
        """Mark voided now (or `at`); [inferred] voiding twice changes nothing, and a redeemed
        credential can be voided (it keeps its `redeemed_at`)."""
        record = self._records[credential_id]
        if record["status"] == "voided":
            return _copy(record)
        stamp = self._stamp(at)
        return self.update(credential_id, status="voided", voided_at=stamp, updated_at=stamp)

    def mutate_random(
        self,
        fraction: float,
        rng: random.Random | None = None,
        *,
        inserts: int = 0,
        deletes: int = 0,
        at: datetime | None = None,
    ) -> dict[str, list[int]]:
        """Redeem, void or re-annotate about `fraction` of the credentials, then insert and
        delete some: a day's churn for benchmarks. Returns the ids touched per operation."""
        rng = rng or random.Random(self.seed + 1)
        count = min(len(self._ids), round(len(self._ids) * fraction))
        updated = rng.sample(self._ids, k=count)
        for credential_id in updated:
            record = self._records[credential_id]
            roll = rng.random()
            if roll < 0.5 and record["status"] == "open" and record["offer_ids"]:
                self.redeem(credential_id, at=at)
            elif roll < 0.6 and record["status"] == "open":
                self.void(credential_id, at=at)
            else:
                note = {"source": "pos", "note": fakedata.hex_token(rng, 8)}
                self.update(credential_id, annotations=note, at=at)
        deleted = rng.sample(self._ids, k=min(len(self._ids), deletes))
        for credential_id in deleted:
            self.delete(credential_id)
        inserted = [self.insert(at=at)["id"] for _ in range(inserts)]
        return {"updated": updated, "inserted": inserted, "deleted": deleted}

    def issue_token(self) -> str:
        """A fresh token, as `GET /auth` returns; valid for `token_ttl_seconds` of clock."""
        token = fakedata.hex_token(self._token_rng, 64)
        self._tokens[token] = self.clock()
        return token

    def expire_tokens(self, *, static: bool = False) -> int:
        """Invalidate every token issued by `/auth` (and the static one with `static`), as
        24 hours passing would; returns how many."""
        count = len(self._tokens)
        self._tokens.clear()
        if static and self._static_token is not None and not self._static_revoked:
            self._static_revoked = True
            count += 1
        return count

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        if token == self._static_token:
            return not self._static_revoked
        issued = self._tokens.get(token)
        if issued is None:
            return False
        if (self.clock() - issued).total_seconds() >= self.token_ttl_seconds:
            del self._tokens[token]
            return False
        return True

    def mutate(self, spec: dict[str, Any]) -> Any:
        """Control-route mutations: `{"op": "insert"|"update"|"delete"|"redeem"|"void"|
        "random"|"expire_tokens", "id", "at", ...fields}`."""
        spec = dict(spec)
        op = spec.pop("op", None)
        at = parse_at(spec.pop("at", None))
        if op == "insert":
            return self.insert(at=at, **spec)
        if op == "update":
            return self.update(int(spec.pop("id")), at=at, **spec)
        if op == "delete":
            self.delete(int(spec["id"]))
            return {"deleted": int(spec["id"])}
        if op == "redeem":
            return self.redeem(int(spec["id"]), at=at)
        if op == "void":
            return self.void(int(spec["id"]), at=at)
        if op == "random":
            return self.mutate_random(
                float(spec.get("fraction", 0.1)),
                random.Random(spec.get("seed", self.seed + 1)),
                inserts=int(spec.get("inserts", 0)),
                deletes=int(spec.get("deletes", 0)),
                at=at,
            )
        if op == "expire_tokens":
            return {"expired": self.expire_tokens(static=bool(spec.get("static", False)))}
        raise ValueError(
            f"unknown op {op!r}; use insert, update, delete, redeem, void, random or expire_tokens"
        )

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "seed": self.seed,
            "base_path": API,
            "auth_path": AUTH_PATH,
            "identity": self.identity,
            "key": self.key,
            "token": self._static_token,
            "account_id": self.account_id,
            "default_per_page": self.default_per_page,
            "max_per_page": self.max_per_page,
            "credentials": len(self._ids),
            "member_id_range": [self.member_ids[0], self.member_ids[-1]],
            "offer_ids": list(self.offers),
            "store_id_range": [min(self.stores), max(self.stores)],
            "channel_ids": list(self.channel_ids),
        }

    def add_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(CONTROL_PREFIX + "expire_tokens", self._ctl_expire_tokens)

    async def _ctl_expire_tokens(self, request: web.Request) -> web.Response:
        try:
            body = await self._ctl_body(request)
        except ValueError as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"expired": self.expire_tokens(static=bool(body.get("static")))})

    async def _ctl_records(self, request: web.Request) -> web.Response:
        """`GET /_sandbox/records?member_id=..` filters like the list endpoint."""
        try:
            filters = self._parse_filters(request.query)
        except ApiError as exc:
            return self._ctl_json(exc.body(), 400)
        records = self.truth(**filters)
        return self._ctl_json({"count": len(records), "records": records})

    # -- querying ------------------------------------------------------------------------

    def _select(
        self, member_id: int | None, offer_id: int | None, store_id: int | None
    ) -> list[int]:
        """Ids matching every given filter, in id order. Unfiltered: the live id list itself
        (callers slice it); filtered: one scan, cached until the next change."""
        if member_id is None and offer_id is None and store_id is None:
            return self._ids
        key = (member_id, offer_id, store_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        records = self._records
        selected = [
            i
            for i in self._ids
            if (member_id is None or records[i]["member_id"] == member_id)
            and (store_id is None or records[i]["store_id"] == store_id)
            and (offer_id is None or offer_id in records[i]["offer_ids"])
        ]
        if len(self._cache) >= 64:
            self._cache.clear()
        self._cache[key] = selected
        return selected

    def _parse_filters(self, query: MultiDictProxy[str]) -> dict[str, int | None]:
        """[inferred] an empty value means no filter (Rails' `present?`); a non-integer one
        is a 400 with the documented `{error, message}` shape."""
        filters: dict[str, int | None] = {}
        for name in FILTERS:
            raw = _last(query, name)
            filters[name] = None if raw is None or raw == "" else _strict_int(name, raw)
        return filters

    def _paging(self, query: MultiDictProxy[str]) -> tuple[int, int]:
        """[inferred] will_paginate parameters read with Ruby's `to_i`: `page` defaults to 1
        and anything below 1 means 1 (real will_paginate would raise InvalidPage); `per_page`
        below 1 means the default, above the maximum is clamped."""
        page = max(ruby_to_i(_last(query, "page")) or 1, 1)
        per_page = ruby_to_i(_last(query, "per_page"))
        if per_page < 1:
            per_page = self.default_per_page
        return page, min(per_page, self.max_per_page)

    # -- HTTP ----------------------------------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """[ext] `{"error": ...}`: used for faults, the rate limit and router errors."""
        return orjson.dumps({"error": message or reason(status)})

    async def decorate_response(self, request: web.Request, response: web.StreamResponse) -> None:
        """The documented response headers on every API answer, faults included."""
        headers = response.headers
        entry = _CURRENT.get()
        runtime = max(0.0, time.monotonic() - entry.at) if entry is not None else 0.0
        headers.setdefault("X-Request-Id", fakedata.uuid4(self._request_rng))
        headers.setdefault("X-Runtime", f"{runtime:.6f}")  # [ext] "X-Runtime: 0.042759"
        headers.setdefault("X-Ua-Compatible", UA_COMPATIBLE)
        headers.setdefault("Cache-Control", CACHE_OK if response.status < 400 else CACHE_ERROR)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Every route also answers with the `.json` URI extension [ext]."""
        e = self._endpoint
        router.add_get(AUTH_PATH, e(self._auth, authenticate=False))
        for ext in ("", ".json"):
            router.add_get(f"{BASE}{ext}", e(self._list))
            router.add_post(f"{BASE}{ext}", e(self._create))
            # Registered before `{id}`, which would otherwise take "eligible" as an id.
            router.add_get(f"{BASE}/eligible{ext}", e(self._eligible))
            router.add_put(BASE + "/{id}/redeem" + ext, e(self._redeem))
            router.add_put(BASE + "/{id}/void" + ext, e(self._void))
        # `{id}` also matches `12.json`; `_credential_id` strips the extension.
        router.add_get(BASE + "/{id}", e(self._show))
        router.add_put(BASE + "/{id}", e(self._update))
        router.add_delete(BASE + "/{id}", e(self._delete))

    def _endpoint(
        self,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        *,
        authenticate: bool = True,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                if authenticate:
                    self._authenticate(request)
                return await handler(request)
            except ApiError as exc:
                return self.json(exc.body(), status=exc.status)

        return endpoint

    # -- accounts ------------------------------------------------------------------------

    def assign_credentials(self, name: str) -> None:
        self.identity = f"sandbox-{name}"
        self.key = account_secret(self.name, name, "key", 24)
        if self._static_token is not None:
            self._static_token = account_secret(self.name, name, "token", 64)
        # Tokens are drawn from a seeded RNG: two accounts of one seed would share them.
        self._token_rng = random.Random(account_secret(self.name, name, "tokens"))

    async def claims(self, request: web.Request) -> bool:
        """Its tokens (static or issued, expired too), and exchanges naming its identity."""
        token = request.headers.get("X-Auth-Token")
        if token and (token == self._static_token or token in self._tokens):
            return True
        if request.path == AUTH_PATH:
            return request.headers.get("X-Auth-Identity") == self.identity
        return False

    def _authenticate(self, request: web.Request) -> None:
        """`X-Auth-Token: <token>`, no prefix (001:45-49). [inferred] 401 bodies."""
        token = request.headers.get("X-Auth-Token")
        if not token:
            raise ApiError(401, "X-Auth-Token header is missing")
        if not self.token_valid(token):
            raise ApiError(401, "Invalid or expired X-Auth-Token; authenticate again at /auth")

    def _wrapped(
        self, record: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        """A `CredentialResponse` [ext]: the record wrapped, with an empty `errors` object."""
        return self.json({"credential": record, "errors": {}}, status=status, headers=headers)

    def _created(self, request: web.Request, record: dict[str, Any]) -> web.Response:
        """201 with the documented mutation headers: [inferred] Rails' weak ETag and the
        credential's Location."""
        body = {"credential": record, "errors": {}}
        etag = hashlib.md5(orjson.dumps(body), usedforsecurity=False).hexdigest()
        location = str(request.url.with_path(f"{BASE}/{record['id']}").with_query(None))
        return self.json(body, status=201, headers={"ETag": f'W/"{etag}"', "Location": location})

    # auth

    async def _auth(self, request: web.Request) -> web.Response:
        """[ext] `GET /auth` with `X-Auth-Identity` + `X-Auth-Key`: 204 and a fresh token in
        the `X-Auth-Token` response header; 401 otherwise. Earlier tokens stay valid."""
        identity = request.headers.get("X-Auth-Identity")
        key = request.headers.get("X-Auth-Key")
        if identity != self.identity or key != self.key:
            raise ApiError(401, "Invalid X-Auth-Identity or X-Auth-Key")  # [inferred] body
        self.auth_count += 1
        return web.Response(status=204, headers={"X-Auth-Token": self.issue_token()})

    # list / show / eligible

    async def _list(self, request: web.Request) -> web.Response:
        """`CredentialList` [ext]: `page`, `per_page`, `total_entries`, `total_pages`, then
        the wrapped credentials of this page, by id ascending [inferred].

        `total_pages` is ceil(total / per_page), 0 for an empty result ([ext] the upstream
        empty-list examples); past the last page `credentials` is empty with the same totals.
        Unknown query parameters are ignored [inferred, Rails].
        """
        filters = self._parse_filters(request.query)
        page, per_page = self._paging(request.query)
        ids = self._select(filters["member_id"], filters["offer_id"], filters["store_id"])
        total = len(ids)
        offset = (page - 1) * per_page
        records = self._records
        body = {
            "page": page,
            "per_page": per_page,
            "total_entries": total,
            "total_pages": -(-total // per_page),
            "credentials": [
                {"credential": records[i], "errors": {}} for i in ids[offset : offset + per_page]
            ],
        }
        return self.json(body)

    def _credential_id(self, request: web.Request) -> int:
        """The path id; [inferred] anything that is not an integer is simply not found."""
        raw = request.match_info["id"].removesuffix(".json")
        if not raw.isdigit() or int(raw) not in self._records:
            raise ApiError(404, NOT_FOUND)
        return int(raw)

    async def _show(self, request: web.Request) -> web.Response:
        return self._wrapped(self._records[self._credential_id(request)])

    async def _eligible(self, request: web.Request) -> web.Response:
        """`CredentialEligibilityResponse` [ext]: `{"is_eligible": bool, "status": str}`.

        [inferred] rules: an unknown offer is not eligible (`offer_not_found`); a member who
        already redeemed a credential carrying the offer is not (`already_redeemed`); anyone
        else is (`eligible`). Both parameters are required integers (else 400).
        """
        values: dict[str, int] = {}
        for name in ("member_id", "offer_id"):
            raw = _last(request.query, name)
            if raw is None or raw == "":
                raise ApiError(400, f"{name} is required", f"{name} is a required parameter")
            values[name] = _strict_int(name, raw)
        member_id, offer_id = values["member_id"], values["offer_id"]
        if offer_id not in self.offers:
            return self.json({"is_eligible": False, "status": "offer_not_found"})
        records = self._records
        redeemed = any(
            records[i]["status"] == "redeemed" for i in self._select(member_id, offer_id, None)
        )
        if redeemed:
            return self.json({"is_eligible": False, "status": "already_redeemed"})
        return self.json({"is_eligible": True, "status": "eligible"})

    # writes

    async def _input(self, request: web.Request) -> dict[str, Any]:
        """The credential fields of a create or update.

        [ext] the upstream examples pass them as query parameters
        (`?member_id=123&channel_id=456&offer_ids=1011,1116`); the documented body is
        `{"credential": CredentialInput}`. Both are read, the body winning. [inferred] a
        body without the `credential` key is taken as the fields themselves (Rails'
        ParamsWrapper); unknown fields are dropped (strong parameters).
        """
        fields: dict[str, Any] = {}
        for name in ("member_id", "channel_id", "store_id", "offer_id", "offer_ids", "annotations"):
            raw = _last(request.query, name)
            if raw is not None:
                fields[name] = raw
        raw_body = await request.read()
        if raw_body.strip():
            try:
                body = orjson.loads(raw_body)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "Error parsing request", str(exc)) from exc  # documented
            if not isinstance(body, dict):
                raise ApiError(400, "Error parsing request", "expected a JSON object")
            given = body.get("credential", body)
            if not isinstance(given, dict):
                raise ApiError(400, "Error parsing request", "credential must be an object")
            fields.update(given)
        return self._validate_input(fields)

    def _validate_input(self, fields: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("member_id", "channel_id"):
            if fields.get(name) not in (None, ""):
                out[name] = _strict_int(name, fields[name])
        if "store_id" in fields:
            value = fields["store_id"]
            out["store_id"] = None if value in (None, "") else _strict_int("store_id", value)
            if out["store_id"] is not None and out["store_id"] not in self.stores:
                raise ApiError(400, f"Store not found with id: {out['store_id']}")  # [inferred]
        if "channel_id" in out and out["channel_id"] not in self.channel_ids:
            # [ext] the validations table's text for a channel outside the account.
            raise ApiError(
                400, "Channel can't be blank and must be associated with your account and offer"
            )
        offer_ids: list[int] | None = None
        if fields.get("offer_ids") is not None:
            raw = fields["offer_ids"]
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list):
                raise _invalid("offer_ids", raw)
            offer_ids = [_strict_int("offer_ids", o) for o in items if o != ""]
        if fields.get("offer_id") not in (None, ""):
            offer_ids = (offer_ids or []) + [_strict_int("offer_id", fields["offer_id"])]
            out["add_offer"] = True
        if offer_ids is not None:
            missing = [o for o in offer_ids if o not in self.offers]
            if missing:
                # [ext] the validations table's text for unknown offers.
                listed = ", ".join(str(o) for o in missing)
                raise ApiError(
                    400, f"Offer not found or not eligible by channel, with id: {listed}"
                )
            out["offer_ids"] = list(dict.fromkeys(offer_ids))
        if "annotations" in fields:
            annotations = fields["annotations"]
            if isinstance(annotations, str):  # [ext] typed string, every example an object
                try:
                    annotations = orjson.loads(annotations) if annotations.strip() else {}
                except orjson.JSONDecodeError as exc:
                    raise ApiError(400, "annotations is invalid", str(exc)) from exc
            if annotations is not None and not isinstance(annotations, dict):
                raise ApiError(400, "annotations is invalid", "annotations must be an object")
            out["annotations"] = annotations or {}
        return out

    async def _create(self, request: web.Request) -> web.Response:
        """201 `CredentialResponse`. [ext] `channel_id` is checked first, then the member."""
        fields = await self._input(request)
        fields.pop("add_offer", None)
        if "channel_id" not in fields:
            raise ApiError(400, CHANNEL_REQUIRED)
        if "member_id" not in fields:
            raise ApiError(400, MEMBER_REQUIRED)
        fields.setdefault("offer_ids", [])
        fields.setdefault("store_id", None)
        fields.setdefault("annotations", {})
        record = self.insert(**fields)
        return self._created(request, self._records[record["id"]])

    async def _update(self, request: web.Request) -> web.Response:
        """201 "Successful update" (documented). `offer_ids` replaces the list, `offer_id`
        adds one [inferred]. [inferred] ActiveRecord dirty tracking: a PUT that changes
        nothing leaves `updated_at` alone."""
        credential_id = self._credential_id(request)
        fields = await self._input(request)
        record = self._records[credential_id]
        if fields.pop("add_offer", False):
            # offer_id (singular) associates one more offer with those already attached.
            fields["offer_ids"] = list(dict.fromkeys(record["offer_ids"] + fields["offer_ids"]))
        changes = {k: v for k, v in fields.items() if record.get(k) != v}
        if changes:
            self.update(credential_id, **changes)
        return self._created(request, self._records[credential_id])

    async def _redeem(self, request: web.Request) -> web.Response:
        credential_id = self._credential_id(request)
        try:
            self.redeem(credential_id)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc  # [inferred] status and body
        return self._created(request, self._records[credential_id])

    async def _void(self, request: web.Request) -> web.Response:
        credential_id = self._credential_id(request)
        self.void(credential_id)
        return self._created(request, self._records[credential_id])

    async def _delete(self, request: web.Request) -> web.Response:
        """200 with the deleted `CredentialResponse` (documented); a hard delete."""
        return self._wrapped(self.delete(self._credential_id(request)))


_LIFETIMES = (300, 900, 1800, 3600, 86_400)
_DERIVED = ("identifier", "merchant_id", "offer_name", "merchant_name", "location_address", "url")


def _remember_request(sim: Simulator, entry: LoggedRequest) -> None:
    """Keep the logged request of the current task so response headers can time it."""
    _CURRENT.set(entry)


def _demo_changes(sim: SparkflySimulator, rng: random.Random) -> str:
    redeemable = [c["id"] for c in sim.truth() if c["status"] == "open" and c["offer_ids"]]
    for credential_id in rng.sample(redeemable, 3):
        sim.redeem(credential_id)
    sim.insert()
    return "3 credentials redeemed, 1 added"


SANDBOX = SandboxSource(
    name="sparkfly",
    make=lambda seed, sizes: SparkflySimulator(credentials=sizes["credentials"], seed=seed),
    credentials=lambda sim: {"token": sim.token},
    sizes=(Size("credentials", 400, "Sparkfly credentials"),),
    port=8704,
    demo_changes=_demo_changes,
    small=lambda seed: SparkflySimulator(credentials=40, seed=seed),
    streams={
        "credentials": SandboxStream(
            records=lambda sim: sim.truth(),
            removal=Removal({"op": "delete", "id": "{id}"}),
        ),
    },
    faults=FaultTarget(
        stream="credentials",
        make=lambda seed: SparkflySimulator(credentials=90, seed=seed),
        list_path=f"{API}/credentials",
        page_size=25,
        record=lambda sim, i: sim._records[sim.ids[i]],
    ),
)

__all__ = ["SANDBOX", "SparkflySimulator", "format_s"]
