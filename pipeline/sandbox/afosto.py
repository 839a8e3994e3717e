"""Afosto simulator: /rel contacts, /lcs shipments and parcels, /cat price groups and prices.

Why it matters to a client (SOURCES.md §1): every list pages by *page number* in request
headers (`x-page`, `x-page-size`) and answers a bare JSON array; most lists tell the total in
`x-count`, the contacts list does not; there is no sort, no date filter and no documented page
size maximum, so a server that silently clamps the size and offset paging over live data
(an insert lands at the end, a delete pulls later records one place forward) are what a
client has to survive. The simulator does exactly that and knows nothing about how any
client pages.

Documented (seed 003): routes, OAuth2 JWT bearer auth with scopes, the paging headers, the
error body `{code, message, reference, errors: {kind: [properties]}}`, the search constraint
shapes (`value` on shipments and contacts, `values` on parcels), record schemas, the upsert
`PUT .../prices` answering `{"success": 1}`, and "disabling" a price group by DELETE.
Everything else is marked `[inferred]` here or in `afosto_data`; the main choices are
constructor parameters.

Records are generated lazily (see `afosto_data`), so 200,000 shipments cost a few megabytes;
a page costs O(log n + page size) and a delete O(log n) plus one memmove.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import calendar
import copy
import hashlib
import hmac
import itertools
import random
from array import array
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web

from . import afosto_data as data
from . import fakedata
from .afosto_data import IdCodec, lcs_time, mix64, ms_time
from .core import Simulator, account_secret, parse_at, reason
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream, Size

ISSUER = "https://afosto.sandbox"
DEFAULT_JWT_SECRET = "afosto-sandbox-hs256-secret-not-for-production"
# [inferred] Seeded history ends here unless the clock is earlier (same seed, same data).
DEFAULT_HISTORY_END = datetime(2024, 1, 1, tzinfo=UTC)
TEN_YEARS = 10 * 365 * 86_400

CONTACTS_READ = ("rel:contacts:read",)
CONTACTS_WRITE = ("rel:contacts:write",)
SHIPMENTS_READ = ("lcs:shipments:read",)
SHIPMENTS_WRITE = ("lcs:shipments:write",)
# [inferred] parcels: "handling lists and parcels" (003:204) or the shipments scope.
PARCELS_READ = ("lcs:handling:read", "lcs:shipments:read")
PARCELS_WRITE = ("lcs:handling:write", "lcs:shipments:write")
PRICES_READ = ("cat:prices:read",)
PRICES_WRITE = ("cat:prices:write",)
READ_SCOPES = ("rel:contacts:read", "lcs:shipments:read", "lcs:handling:read", "cat:prices:read")
WRITE_SCOPES = (
    "rel:contacts:write",
    "lcs:shipments:write",
    "lcs:handling:write",
    "cat:prices:write",
)
RESOURCES = ("contacts", "shipments", "parcels", "groups", "prices")

CONTACT_SEARCH_KEYS = frozenset({"id"})
SHIPMENT_SEARCH_KEYS = frozenset(
    {"ids", "secret", "is_outbound", "from_id", "from_type", "to_id", "to_type", "prior_ids"}
)
PARCEL_SEARCH_KEYS = frozenset({"ids", "is_delivered"})
BOOLEAN_KEYS = frozenset({"is_outbound", "is_delivered"})
_DIGITS = frozenset("0123456789")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Constraint = tuple[str, frozenset[str]]


# --------------------------------------------------------------------------- JWT (HS256)


class TokenError(Exception):
    """Why a bearer token was refused; the message becomes the 401 body's message."""


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict: the stdlib decoder would silently skip characters outside the alphabet."""
    if not _B64URL.issuperset(text):
        raise TokenError("Malformed token: a segment is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("Malformed token: a segment is not base64url") from exc


def encode_jwt(claims: dict[str, Any], secret: str) -> str:
    """A compact HS256 JWS: enough JWT to exercise a client, no dependency."""
    header = b64url_encode(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    payload = b64url_encode(orjson.dumps(claims))
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url_encode(signature)}"


def decode_jwt(
    token: str, secret: str, *, now: float | None, issuer: str = ISSUER
) -> dict[str, Any]:
    """The claims of a valid token; raises TokenError naming what is wrong. `now=None` leaves
    expiry unjudged (whose token it is, not whether it still holds)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("Malformed token: expected three dot-separated segments")
    try:
        header = orjson.loads(b64url_decode(parts[0]))
        claims = orjson.loads(b64url_decode(parts[1]))
    except orjson.JSONDecodeError as exc:
        raise TokenError("Malformed token: a segment is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("Malformed token: header and payload must be JSON objects")
    if header.get("alg") != "HS256":
        raise TokenError(f"Unsupported token algorithm {header.get('alg')!r}")
    expected = hmac.new(
        secret.encode(), f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(expected, b64url_decode(parts[2])):
        raise TokenError("Invalid token signature")
    if claims.get("iss") != issuer:
        raise TokenError(f"Token issuer {claims.get('iss')!r} is not {issuer!r}")
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise TokenError("Token has no expiry (exp)")
    if now is not None and now >= expires:
        raise TokenError("Token expired")
    return claims


# --------------------------------------------------------------------------- helpers


class ApiError(Exception):
    """An Afosto error answer raised from inside a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}
        self.headers = headers or {}


def _epoch_s(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return calendar.timegm(moment.astimezone(UTC).utctimetuple())


def _epoch_ms(moment: datetime) -> int:
    return _epoch_s(moment) * 1000 + moment.microsecond // 1000


def _parse_rfc3339(value: Any) -> int | None:
    """Epoch ms of an RFC 3339 timestamp with an offset (`Z` allowed), else None."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if parsed.tzinfo is None else _epoch_ms(parsed)


def _header_int(raw: str | None, default: int) -> int:
    """[inferred] a missing, non-numeric or < 1 paging header means the default."""
    if raw is None:
        return default
    raw = raw.strip()
    if not raw or not _DIGITS.issuperset(raw):
        return default
    value = int(raw)
    return value if value >= 1 else default


def _dig(record: dict[str, Any], *path: str) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _flag(value: Any) -> str:
    return "true" if value is True else "false"


def _wanted_keys(allowed: Iterable[str], given: Iterable[str], what: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(unknown)}")


# --------------------------------------------------------------------------- lazy tables


VIEW_CACHE_RECORDS = 1_000_000


class LazyTable:
    """The live records of one resource, in creation (insertion) order.

    Stores only sequence numbers (an `array`, sorted because sequence numbers only grow) and
    the records a mutation touched (`changed`); every other record is rebuilt from its
    sequence number on demand. Ids encode sequence numbers (`IdCodec`); an id given by a test
    at insert time goes to `custom_ids`.
    """

    def __init__(
        self,
        codec: IdCodec,
        seeded: int,
        build: Callable[[int], dict[str, Any]],
        build_view: Callable[[int], dict[str, Any]] | None = None,
        project: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.codec = codec
        self.seeded = seeded
        self.order = array("q", range(seeded))
        self.next_seq = seeded
        self.changed: dict[int, dict[str, Any]] = {}
        self.custom_ids: dict[str, int] = {}
        self._custom_seqs: set[int] = set()
        self.version = 0  # bumped by every mutation; search results are cached per version
        self._build = build
        self._build_view = build_view or build
        self._project = project
        # Serialised list views of untouched seeded records (see `view_json`).
        self._view_json: dict[int, orjson.Fragment] = {}

    def __len__(self) -> int:
        return len(self.order)

    def live(self, seq: int) -> bool:
        index = bisect.bisect_left(self.order, seq)
        return index < len(self.order) and self.order[index] == seq

    def seq_of(self, record_id: str) -> int | None:
        seq = self.custom_ids.get(record_id)
        if seq is None:
            seq = self.codec.decode(record_id)
            if seq is None or seq >= self.next_seq or seq in self._custom_seqs:
                return None
        return seq if self.live(seq) else None

    def require(self, record_id: str) -> int:
        seq = self.seq_of(str(record_id))
        if seq is None:
            raise KeyError(record_id)
        return seq

    def id_of(self, seq: int) -> str:
        record = self.changed.get(seq)
        return str(record["id"]) if record is not None else self.codec.encode(seq)

    def full(self, seq: int) -> dict[str, Any]:
        """The whole internal record (shared when changed: copy before handing out)."""
        record = self.changed.get(seq)
        return record if record is not None else self._build(seq)

    def view(self, seq: int) -> dict[str, Any]:
        """The record as the list endpoint serves it (shared when changed)."""
        record = self.changed.get(seq)
        if record is None:
            return self._build_view(seq)
        return self._project(record) if self._project else record

    def view_json(self, seq: int) -> dict[str, Any] | orjson.Fragment:
        """The list view, serialised once per untouched seeded record.

        Rebuilding a record costs far more than serving it (seeded RNG, ids, timestamps), which
        made the simulator, not the client, the bound of a benchmark on a two-core machine. A
        seeded record never changes in place (a mutation moves it to `changed`, checked first),
        so its bytes can be kept; at most `VIEW_CACHE_RECORDS`, about 1.2 KB each."""
        if seq in self.changed:
            return self.view(seq)
        cached = self._view_json.get(seq)
        if cached is None:
            cached = orjson.Fragment(orjson.dumps(self._build_view(seq)))
            if len(self._view_json) < VIEW_CACHE_RECORDS:
                self._view_json[seq] = cached
        return cached

    def materialise(self, seq: int) -> dict[str, Any]:
        record = self.changed.get(seq)
        if record is None:
            record = self.changed[seq] = self._build(seq)
        self.version += 1
        return record

    def reserve(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def add(self, seq: int, record: dict[str, Any]) -> None:
        """Append a reserved record at the end of the creation order."""
        record_id = str(record["id"])
        if record_id != self.codec.encode(seq):
            if self.seq_of(record_id) is not None:
                raise ValueError(f"id {record_id!r} is already taken")
            self.custom_ids[record_id] = seq
            self._custom_seqs.add(seq)
        self.order.append(seq)
        self.changed[seq] = record
        self.version += 1

    def remove(self, seq: int) -> None:
        index = bisect.bisect_left(self.order, seq)
        if index >= len(self.order) or self.order[index] != seq:
            raise KeyError(seq)
        del self.order[index]
        record = self.changed.pop(seq, None)
        if seq in self._custom_seqs and record is not None:
            self.custom_ids.pop(str(record["id"]), None)
            self._custom_seqs.discard(seq)
        self.version += 1

    def window(self, offset: int, limit: int) -> list[int]:
        return self.order[offset : offset + limit].tolist()


def _shipment_list_view(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record[key] for key in data.SHIPMENT_LIST_KEYS}


SHIPMENT_MATCHERS: dict[str, Callable[[dict[str, Any], frozenset[str]], bool]] = {
    "secret": lambda r, v: r.get("secret") in v,
    "is_outbound": lambda r, v: _flag(r.get("is_outbound")) in v,
    "from_id": lambda r, v: _dig(r, "addressing", "from", "entity_id") in v,
    "from_type": lambda r, v: _dig(r, "addressing", "from", "entity_type") in v,
    "to_id": lambda r, v: _dig(r, "addressing", "to", "entity_id") in v,
    "to_type": lambda r, v: _dig(r, "addressing", "to", "entity_type") in v,
    "prior_ids": lambda r, v: any(p in v for p in r.get("prior_shipments") or ()),
}
PARCEL_MATCHERS: dict[str, Callable[[dict[str, Any], frozenset[str]], bool]] = {
    "is_delivered": lambda r, v: _flag(r.get("is_delivered")) in v,
}


def parse_constraints(
    body: Any, keys: frozenset[str], field: str, booleans: frozenset[str] = BOOLEAN_KEYS
) -> list[Constraint]:
    """Validate a search body strictly, as documented per endpoint (SOURCES §1.5).

    `constraints` absent or null means no constraint (everything) [inferred]. Each
    constraint needs `key` (one of `keys`), `operator` `in` and the array field spelled
    `field` (`value` or `values`) holding strings; booleans go as "true"/"false" [inferred].
    Every problem is reported at once under `invalid value` / `required`, keyed by property
    path such as `constraints.0.values`.
    """
    if body is None:
        return []
    if not isinstance(body, dict):
        raise ApiError(400, "The search body must be a JSON object", {"invalid value": ["body"]})
    constraints = body.get("constraints")
    if constraints is None:
        return []
    if not isinstance(constraints, list):
        raise ApiError(400, "constraints must be an array", {"invalid value": ["constraints"]})
    errors: dict[str, list[str]] = {}
    parsed: list[Constraint] = []
    for index, constraint in enumerate(constraints):
        path = f"constraints.{index}"
        if not isinstance(constraint, dict):
            errors.setdefault("invalid value", []).append(path)
            continue
        problems_before = sum(len(v) for v in errors.values())
        for name in constraint:
            if name not in ("key", "operator", field):
                errors.setdefault("invalid value", []).append(f"{path}.{name}")
        key = constraint.get("key")
        if key is None:
            errors.setdefault("required", []).append(f"{path}.key")
        elif key not in keys:
            errors.setdefault("invalid value", []).append(f"{path}.key")
        operator = constraint.get("operator")
        if operator is None:
            errors.setdefault("required", []).append(f"{path}.operator")
        elif operator != "in":
            errors.setdefault("invalid value", []).append(f"{path}.operator")
        values = constraint.get(field)
        if field not in constraint:
            errors.setdefault("required", []).append(f"{path}.{field}")
        elif not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            errors.setdefault("invalid value", []).append(f"{path}.{field}")
        elif key in booleans and any(v.lower() not in ("true", "false") for v in values):
            errors.setdefault("invalid value", []).append(f"{path}.{field}")
        if sum(len(v) for v in errors.values()) == problems_before:
            assert isinstance(values, list)
            if key in booleans:
                values = [v.lower() for v in values]
            parsed.append((str(key), frozenset(values)))
    if errors:
        listed = ", ".join(p for paths in errors.values() for p in paths)
        raise ApiError(400, f"Invalid search constraints: {listed}", errors)
    return parsed


# --------------------------------------------------------------------------- the simulator


class AfostoSimulator(Simulator):
    """The Afosto API for one tenant: contacts, shipments, parcels, price groups and prices.

    Python API for tests (copies out; mutations stamp `at` or the simulator clock):
    `token`, `write_token`, `issue_token`; `truth`, `detail`, `ids`, `count`;
    `insert_contact` / `update_contact` / `delete_contact`; `insert_shipment` /
    `update_shipment` / `delete_shipment`; `insert_parcel` / `update_parcel` /
    `set_parcel_items` / `delete_parcel`; `insert_group` / `soft_delete_group`;
    `upsert_price` / `delete_price` / `set_vat`; `mutate` for the control route.
    """

    name: ClassVar[str] = "afosto"

    def __init__(
        self,
        *,
        contacts: int = 50,
        shipments: int = 100,
        parcels: int | None = None,
        groups: int = 4,
        prices_per_group: int = 30,
        seed: int = 1,
        max_page_size: int = 250,
        default_page_size: int = 25,
        contacts_have_updated_at: bool = False,
        jwt_secret: str = DEFAULT_JWT_SECRET,
        history_end: datetime | None = None,
        history_days: float = 730.0,
        token_lifetime: float = TEN_YEARS,
        **core: Any,
    ) -> None:
        super().__init__(seed=seed, **core)
        # [inferred] no maximum page size is documented (SOURCES §1.2); larger sizes are
        # clamped silently, as an undocumented server limit would.
        self.max_page_size = max_page_size
        self.default_page_size = default_page_size  # documented on /cat (003:2343)
        # [inferred] the schema declares created/updated/deleted_at; no example renders them.
        self.contacts_have_updated_at = contacts_have_updated_at
        self.jwt_secret = jwt_secret
        if parcels is None:
            parcels = round(shipments * 1.5)
        self._data_rng = random.Random(seed)
        identity = random.Random(mix64(seed * 1_000_003 + 1))
        self.tenant = fakedata.uuid4(identity)
        self.subject = fakedata.uuid4(identity)
        self._references = itertools.count(1)
        self._reference_codec = IdCodec(seed * 1_000_003 + 2)
        self._search_cache: dict[tuple[Any, ...], tuple[int, list[int]]] = {}

        end = history_end or min(DEFAULT_HISTORY_END, self.clock())
        end_s = _epoch_s(end)
        span_s = int(history_days * 86_400)
        start_s = end_s - span_s
        self._history_end_ms = end_s * 1000
        catalogue = data.make_catalogue(random.Random(mix64(seed * 1_000_003 + 3)))
        self._catalogue = {product.sku: product for product in catalogue}
        salt = seed * 1_000_003
        contact_codec = IdCodec(salt + 101)
        shipment_codec = IdCodec(salt + 102)
        parcel_codec = IdCodec(salt + 103)
        self._rel = data.RelGenerator(
            seed, contact_codec, start_s * 1000, span_s * 1000, contacts, contacts_have_updated_at
        )
        self._lcs = data.LcsGenerator(
            seed,
            shipment_codec=shipment_codec,
            parcel_codec=parcel_codec,
            contact_codec=contact_codec,
            contacts=contacts,
            shipments=shipments,
            parcels=parcels,
            start=start_s,
            span=span_s,
            catalogue=catalogue,
        )
        self._contacts = LazyTable(contact_codec, contacts, self._rel.contact)
        lcs = self._lcs
        self._shipments = LazyTable(
            shipment_codec,
            shipments,
            lambda seq: lcs.shipment(seq, detail=True),
            lambda seq: lcs.shipment(seq, detail=False),
            _shipment_list_view,
        )
        self._parcels = LazyTable(parcel_codec, parcels, lcs.parcel)
        # Parcels inserted for, or moved to, a shipment; seeded ones are found by bisect.
        self._parcels_by_shipment: dict[str, list[int]] = {}

        self._groups: dict[str, dict[str, Any]] = {}
        self._group_order: list[str] = []
        self._prices: dict[str, dict[str, Any]] = {}
        self._group_prices: dict[str, list[str]] = {}
        self._price_keys: dict[tuple[str, str, int], str] = {}
        self._seed_groups(groups, prices_per_group, start_s * 1000, end_s * 1000)

        self._token_lifetime = token_lifetime
        self._issue_standing_tokens()

    def _issue_standing_tokens(self) -> None:
        lifetime = self._token_lifetime
        self.token = self.issue_token(READ_SCOPES, expires_in=lifetime)
        self.write_token = self.issue_token(READ_SCOPES + WRITE_SCOPES, expires_in=lifetime)

    # -- seeded price groups -------------------------------------------------------------

    def _seed_groups(self, count: int, prices_per_group: int, start_ms: int, end_ms: int) -> None:
        rng = random.Random(mix64(self.seed * 1_000_003 + 4))
        span = end_ms - start_ms
        catalogue = list(self._catalogue.values())
        for index in range(count):
            created = start_ms + int(span * 0.02 * (index + rng.random()))
            updated = created if rng.random() < 0.5 else created + int(rng.random() * span * 0.5)
            group = data.make_group(rng, index, created, updated)
            self._store_group(group)
            for price in data.make_prices(
                rng, group, index, catalogue, prices_per_group, created, end_ms
            ):
                self._store_price(price)

    def _store_group(self, group: dict[str, Any]) -> None:
        if group["id"] in self._groups:
            raise ValueError(f"group {group['id']!r} already exists")
        self._groups[group["id"]] = group
        self._group_order.append(group["id"])
        self._group_prices[group["id"]] = []

    def _store_price(self, price: dict[str, Any]) -> None:
        active = _parse_rfc3339(price["active_at"])
        assert active is not None
        self._prices[price["id"]] = price
        self._group_prices[price["price_group_id"]].append(price["id"])
        self._price_keys[(price["price_group_id"], price["sku"], active)] = price["id"]

    # -- tokens --------------------------------------------------------------------------

    def issue_token(self, scopes: Iterable[str], *, expires_in: float = 3600) -> str:
        """A JWT signed with this simulator's secret, valid `expires_in` seconds from the
        simulator clock (negative: already expired)."""
        issued = _epoch_s(self.clock())
        claims = {
            "iss": ISSUER,
            "sub": self.subject,
            "tenant": self.tenant,
            "iat": issued,
            "exp": issued + int(expires_in),
            "scope": " ".join(scopes),
        }
        return encode_jwt(claims, self.jwt_secret)

    # -- accounts ------------------------------------------------------------------------

    def assign_credentials(self, name: str) -> None:
        """One issuer signs every tenant's tokens; the `tenant` claim says whose a token is."""
        identity = random.Random(account_secret(self.name, name, "identity"))
        self.tenant = fakedata.uuid4(identity)
        self.subject = fakedata.uuid4(identity)
        self._issue_standing_tokens()

    async def claims(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            claims = decode_jwt(token.strip(), self.jwt_secret, now=None)
        except TokenError:
            return False
        return claims.get("tenant") == self.tenant

    # -- reading -------------------------------------------------------------------------

    def _table(self, resource: str) -> LazyTable:
        tables = {
            "contacts": self._contacts,
            "shipments": self._shipments,
            "parcels": self._parcels,
        }
        if resource not in tables:
            raise ValueError(f"unknown resource {resource!r}; use one of {', '.join(RESOURCES)}")
        return tables[resource]

    def truth(self, resource: str = "contacts") -> list[dict[str, Any]]:
        """Every record as the list endpoint serves it, in server order (deep copies).

        Shipments come in the list shape; prices group by group in group order, with every
        VAT line. Cost is linear: about 20 µs per lazily generated record.
        """
        if resource == "groups":
            return [copy.deepcopy(self._groups[g]) for g in self._group_order]
        if resource == "prices":
            return [
                copy.deepcopy(self._prices[p])
                for g in self._group_order
                for p in self._group_prices[g]
            ]
        table = self._table(resource)
        return [
            copy.deepcopy(table.view(seq)) if seq in table.changed else table.view(seq)
            for seq in table.order
        ]

    def warm(self, resource: str) -> None:
        """Serialise every list view of a resource ahead of time, so a benchmark measures
        the client against a server whose cost per page stays the same from the first scan."""
        table = self._table(resource)
        for seq in table.order:
            table.view_json(seq)

    def detail(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """The record as `GET /<resource>/{id}` serves it, or None when there is none."""
        if resource == "groups":
            group = self._groups.get(record_id)
            return copy.deepcopy(group) if group is not None else None
        if resource == "prices":
            price = self._prices.get(record_id)
            return copy.deepcopy(price) if price is not None else None
        table = self._table(resource)
        seq = table.seq_of(str(record_id))
        if seq is None:
            return None
        if resource == "shipments":
            return copy.deepcopy(self._shipment_detail(seq))
        return copy.deepcopy(table.full(seq))

    def ids(self, resource: str) -> list[str]:
        """Ids in server order, without building records (cheap even for 200k)."""
        if resource == "groups":
            return list(self._group_order)
        if resource == "prices":
            return [p for g in self._group_order for p in self._group_prices[g]]
        table = self._table(resource)
        return [table.id_of(seq) for seq in table.order]

    def count(self, resource: str) -> int:
        if resource == "groups":
            return len(self._group_order)
        if resource == "prices":
            return len(self._prices)
        return len(self._table(resource))

    def _shipment_detail(self, seq: int) -> dict[str, Any]:
        record = self._shipments.full(seq)
        shipment_id = str(record["id"])
        parcels = [self._parcels.view(p) for p in self._parcel_seqs_of(shipment_id, seq)]
        return {
            key: parcels if key == "parcels" else record[key] for key in data.SHIPMENT_DETAIL_KEYS
        }

    def _parcel_seqs_of(self, shipment_id: str, shipment_seq: int) -> list[int]:
        candidates = set(self._parcels_by_shipment.get(shipment_id, ()))
        seeded = self._shipments
        if shipment_seq < seeded.seeded and shipment_id == seeded.codec.encode(shipment_seq):
            candidates.update(self._lcs.seeded_parcels_of(shipment_seq))
        parcels = self._parcels
        return [
            p
            for p in sorted(candidates)
            if parcels.live(p) and parcels.full(p)["shipment_id"] == shipment_id
        ]

    # -- time ----------------------------------------------------------------------------

    def _now(self, at: datetime | None) -> datetime:
        return at if at is not None else self.clock()

    # -- contacts ------------------------------------------------------------------------

    def _contact_fields(self) -> tuple[str, ...]:
        times = data.CONTACT_TIME_KEYS if self.contacts_have_updated_at else ()
        return data.CONTACT_KEYS + times

    def insert_contact(self, *, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
        """Create a contact at the end of the list; `overrides` replace generated fields."""
        _wanted_keys(self._contact_fields(), overrides, "contact")
        table = self._contacts
        seq = table.reserve()
        record = self._rel.new_contact(seq, _epoch_ms(self._now(at)))
        record.update(copy.deepcopy(overrides))
        table.add(seq, record)
        return copy.deepcopy(record)

    def update_contact(
        self, contact_id: str, *, at: datetime | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Edit top-level fields (or just touch): a new `version` every time, and a new
        `updated_at` when contacts carry timestamps."""
        _wanted_keys(self._contact_fields(), changes, "contact")
        if "id" in changes:
            raise ValueError("a contact's id cannot change")
        table = self._contacts
        record = table.materialise(table.require(contact_id))
        record.update(copy.deepcopy(changes))
        if "version" not in changes:
            record["version"] = fakedata.hex_token(self._data_rng, 16)
        if self.contacts_have_updated_at and "updated_at" not in changes:
            record["updated_at"] = ms_time(_epoch_ms(self._now(at)))
        return copy.deepcopy(record)

    def delete_contact(self, contact_id: str) -> None:
        """[inferred] a hard delete: DELETE answers 204 and the contact leaves the list."""
        table = self._contacts
        table.remove(table.require(contact_id))

    # -- shipments -----------------------------------------------------------------------

    _SHIPMENT_FIELDS = tuple(k for k in data.SHIPMENT_DETAIL_KEYS if k != "parcels")

    def insert_shipment(self, *, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
        """Create an open shipment at the end of the list; returns its detail shape."""
        _wanted_keys(self._SHIPMENT_FIELDS, overrides, "shipment")
        table = self._shipments
        seq = table.reserve()
        record = self._lcs.new_shipment(seq, _epoch_s(self._now(at)))
        record.update(copy.deepcopy(overrides))
        table.add(seq, record)
        return copy.deepcopy(self._shipment_detail(seq))

    def update_shipment(
        self, shipment_id: str, *, at: datetime | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Edit fields (list or detail ones) and bump `updated_at`; returns the detail."""
        _wanted_keys(self._SHIPMENT_FIELDS, changes, "shipment")
        if "id" in changes:
            raise ValueError("a shipment's id cannot change")
        table = self._shipments
        seq = table.require(shipment_id)
        record = table.materialise(seq)
        record.update(copy.deepcopy(changes))
        if "updated_at" not in changes:
            record["updated_at"] = lcs_time(_epoch_s(self._now(at)))
        return copy.deepcopy(self._shipment_detail(seq))

    def delete_shipment(self, shipment_id: str) -> None:
        """Hard delete (DELETE → 204, no tombstone). [inferred] Its parcels stay listed."""
        table = self._shipments
        table.remove(table.require(shipment_id))

    # -- parcels -------------------------------------------------------------------------

    def insert_parcel(
        self, shipment_id: str | None = None, *, at: datetime | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Create a parcel at the end of the list, for `shipment_id` or a random live one."""
        _wanted_keys(data.PARCEL_KEYS, overrides, "parcel")
        if shipment_id is None:
            shipments = self._shipments
            if len(shipments):
                seq = shipments.order[int(self._data_rng.random() * len(shipments))]
                shipment_id = shipments.id_of(seq)
            else:
                shipment_id = fakedata.uuid4(self._data_rng)
        table = self._parcels
        seq = table.reserve()
        record = self._lcs.new_parcel(seq, str(shipment_id), _epoch_s(self._now(at)))
        record.update(copy.deepcopy(overrides))
        table.add(seq, record)
        self._parcels_by_shipment.setdefault(str(record["shipment_id"]), []).append(seq)
        return copy.deepcopy(record)

    def update_parcel(
        self, parcel_id: str, *, at: datetime | None = None, **changes: Any
    ) -> dict[str, Any]:
        """Edit fields and bump `updated_at`. A new `shipment_id` moves the parcel."""
        _wanted_keys(data.PARCEL_KEYS, changes, "parcel")
        if "id" in changes:
            raise ValueError("a parcel's id cannot change")
        table = self._parcels
        seq = table.require(parcel_id)
        record = table.materialise(seq)
        record.update(copy.deepcopy(changes))
        if "shipment_id" in changes:
            self._parcels_by_shipment.setdefault(str(record["shipment_id"]), []).append(seq)
        if "updated_at" not in changes:
            record["updated_at"] = lcs_time(_epoch_s(self._now(at)))
        return copy.deepcopy(record)

    def set_parcel_items(
        self, parcel_id: str, items: Sequence[dict[str, Any]], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Replace a parcel's items (ids drawn where missing); `count` follows the summed
        quantities [inferred]; bumps `updated_at`."""
        normalised = [data.parcel_item(self._data_rng, item) for item in items]
        return self.update_parcel(
            parcel_id,
            at=at,
            items=normalised,
            count=sum(item["quantity"] for item in normalised),
        )

    def delete_parcel(self, parcel_id: str) -> None:
        """Hard delete (DELETE → 204)."""
        table = self._parcels
        table.remove(table.require(parcel_id))

    # -- price groups and prices ---------------------------------------------------------

    def insert_group(self, *, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
        """Create a price group (no prices) at the end of the group list."""
        _wanted_keys(data.GROUP_KEYS, overrides, "group")
        stamp = _epoch_ms(self._now(at))
        group = data.make_group(self._data_rng, len(self._group_order), stamp, stamp)
        group.update(copy.deepcopy(overrides))
        self._store_group(group)
        return copy.deepcopy(group)

    def soft_delete_group(self, group_id: str, *, at: datetime | None = None) -> dict[str, Any]:
        """What DELETE /cat/groups/{id} does: set `deleted_at` (and `updated_at`) [inferred].

        The group stays listed and keeps its prices. Disabling it again changes nothing.
        """
        group = self._groups[group_id]
        if group["deleted_at"] is None:
            stamp = ms_time(_epoch_ms(self._now(at)))
            group["deleted_at"] = stamp
            group["updated_at"] = stamp
        return copy.deepcopy(group)

    def upsert_price(
        self,
        group_id: str,
        sku: str,
        amount: int,
        *,
        original_amount: int | None = None,
        active_at: datetime | str | None = None,
        vat: Sequence[dict[str, Any]] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """What PUT /cat/groups/{id}/prices does for one row.

        [inferred] The key is `(sku, active_at)`: an existing row is edited in place, keeping
        its id, its `created_at` and its place in the list; any other pair appends a new row.
        `original_amount` defaults to `amount`, `active_at` to now; a new row copies the VAT
        lines of the latest price of the sku in the group (else the catalogue's).
        """
        if group_id not in self._groups:
            raise KeyError(group_id)
        now_ms = _epoch_ms(self._now(at))
        if active_at is None:
            active_ms = now_ms
        elif isinstance(active_at, datetime):
            active_ms = _epoch_ms(active_at)
        else:
            parsed = _parse_rfc3339(active_at)
            if parsed is None:
                raise ValueError(f"active_at {active_at!r} is not an RFC 3339 timestamp")
            active_ms = parsed
        original = amount if original_amount is None else original_amount
        existing = self._price_keys.get((group_id, sku, active_ms))
        if existing is not None:
            price = self._prices[existing]
            price["amount"] = amount
            price["original_amount"] = original
            if vat is not None:
                price["vat"] = copy.deepcopy(list(vat))
            return copy.deepcopy(price)
        price = {
            "id": fakedata.uuid4(self._data_rng),
            "sku": sku,
            "amount": amount,
            "original_amount": original,
            "vat": copy.deepcopy(list(vat))
            if vat is not None
            else self._default_vat(group_id, sku),
            "price_group_id": group_id,
            "active_at": ms_time(active_ms),
            "created_at": ms_time(now_ms),
        }
        self._store_price(price)
        return copy.deepcopy(price)

    def _default_vat(self, group_id: str, sku: str) -> list[dict[str, Any]]:
        for price_id in reversed(self._group_prices[group_id]):
            if self._prices[price_id]["sku"] == sku:
                return copy.deepcopy(self._prices[price_id]["vat"])
        product = self._catalogue.get(sku)
        if product is None:
            product = data.Product(sku, sku, "", 0, reduced_vat=False)
        return data.vat_lines(product, with_us=False)

    def delete_price(self, price_id: str) -> None:
        """Remove a price outright. The API has no such call: this is for tests only."""
        price = self._prices.pop(price_id)
        group_id = price["price_group_id"]
        self._group_prices[group_id].remove(price_id)
        active = _parse_rfc3339(price["active_at"])
        self._price_keys.pop((group_id, price["sku"], active or 0), None)

    def set_vat(self, price_id: str, vat_lines: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Replace a price's VAT lines in place (a tax change: `created_at` stays)."""
        price = self._prices[price_id]
        price["vat"] = copy.deepcopy(list(vat_lines))
        return copy.deepcopy(price)

    # -- control route -------------------------------------------------------------------

    def mutate(self, spec: dict[str, Any]) -> Any:
        """`POST /_sandbox/mutate` with `{"op": <method name>, "id": ..., <fields>, "at"}`.

        Ops: insert_contact, update_contact, delete_contact, insert_shipment,
        update_shipment, delete_shipment, insert_parcel, update_parcel, set_parcel_items,
        delete_parcel, insert_group, soft_delete_group, upsert_price, delete_price, set_vat.
        """
        spec = dict(spec)
        op = spec.pop("op", None)
        at = parse_at(spec.pop("at", None))
        record_id = spec.pop("id", None)

        def need_id() -> str:
            if record_id is None:
                raise ValueError(f"{op} needs an id")
            return str(record_id)

        def need(key: str) -> Any:
            if key not in spec:
                raise ValueError(f"{op} needs {key}")
            return spec.pop(key)

        if op in ("insert_contact", "insert_shipment", "insert_group"):
            return getattr(self, op)(at=at, **spec)
        if op == "insert_parcel":
            return self.insert_parcel(spec.pop("shipment_id", None), at=at, **spec)
        if op in ("update_contact", "update_shipment", "update_parcel"):
            return getattr(self, op)(need_id(), at=at, **spec)
        if op in ("delete_contact", "delete_shipment", "delete_parcel", "delete_price"):
            getattr(self, op)(need_id())
            return {"deleted": record_id}
        if op == "set_parcel_items":
            return self.set_parcel_items(need_id(), need("items"), at=at)
        if op == "soft_delete_group":
            return self.soft_delete_group(need_id(), at=at)
        if op == "upsert_price":
            group_id, sku, amount = need("group_id"), need("sku"), need("amount")
            return self.upsert_price(str(group_id), str(sku), int(amount), at=at, **spec)
        if op == "set_vat":
            return self.set_vat(need_id(), need("vat"))
        raise ValueError(f"unknown op {op!r}; see AfostoSimulator.mutate")

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "seed": self.seed,
            "base_path": "",
            "token": self.token,
            "write_token": self.write_token,
            "scopes": list(READ_SCOPES),
            "issuer": ISSUER,
            "tenant": self.tenant,
            "max_page_size": self.max_page_size,
            "default_page_size": self.default_page_size,
            "counts": {resource: self.count(resource) for resource in RESOURCES},
        }

    def add_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sandbox/token", self._ctl_token)

    async def _ctl_token(self, request: web.Request) -> web.Response:
        """`{"scopes": [...], "expires_in": 3600}` → `{"token": <jwt>}`."""
        try:
            body = await self._ctl_body(request)
            scopes = body.get("scopes", list(READ_SCOPES))
            if not isinstance(scopes, list):
                raise ValueError("scopes must be a list")
            token = self.issue_token(
                [str(s) for s in scopes], expires_in=float(body.get("expires_in", 3600))
            )
        except (ValueError, TypeError) as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"token": token})

    async def _ctl_records(self, request: web.Request) -> web.Response:
        """`GET /_sandbox/records?resource=shipments` (default: contacts)."""
        try:
            records = self.truth(request.query.get("resource", "contacts"))
        except ValueError as exc:
            return self._ctl_json({"error": str(exc)}, 400)
        return self._ctl_json({"count": len(records), "records": records})

    # -- HTTP: errors and auth -----------------------------------------------------------

    def _reference(self) -> str:
        return self._reference_codec.encode(next(self._references))

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """The one Afosto error shape (003:576): `code` is the HTTP status [inferred],
        `reference` a request id, `errors` an object of property lists by kind."""
        return self._error_bytes(status, message or reason(status), {})

    def _error_bytes(self, status: int, message: str, errors: dict[str, list[str]]) -> bytes:
        return orjson.dumps(
            {"code": status, "message": message, "reference": self._reference(), "errors": errors}
        )

    def _api_error(self, exc: ApiError) -> web.Response:
        headers = {"Content-Type": self.json_content_type, **exc.headers}
        body = self._error_bytes(exc.status, exc.message, exc.errors)
        return web.Response(status=exc.status, body=body, headers=headers)

    def _authorise(self, request: web.Request, scopes: tuple[str, ...]) -> None:
        """401 for a missing, malformed, badly signed or expired token; 403 [inferred] for a
        valid one without any of `scopes`, naming them."""
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(
                401,
                "Missing bearer token: send Authorization: Bearer <jwt>",
                headers={"WWW-Authenticate": 'Bearer realm="afosto"'},
            )
        scheme, _, token = header.strip().partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise TokenError("The Authorization header must read 'Bearer <jwt>'")
            claims = decode_jwt(token.strip(), self.jwt_secret, now=self.clock().timestamp())
            if claims.get("tenant") != self.tenant:
                # [inferred] a token of the issuer for a tenant this API does not serve.
                raise TokenError("Token is for another tenant")
        except TokenError as exc:
            raise ApiError(
                401,
                str(exc),
                headers={"WWW-Authenticate": 'Bearer realm="afosto", error="invalid_token"'},
            ) from exc
        granted = set(str(claims.get("scope", "")).split())
        if granted.isdisjoint(scopes):
            resource = request.match_info.route.resource
            path = resource.canonical if resource is not None else request.path
            needed = " or ".join(scopes)
            raise ApiError(
                403,
                f"This token lacks the scope {needed} required for {request.method} {path}",
                headers={
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'
                },
            )

    def _guard(self, scopes: tuple[str, ...], handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                self._authorise(request, scopes)
                return await handler(request)
            except ApiError as exc:
                return self._api_error(exc)

        return guarded

    # -- HTTP: routes --------------------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        g = self._guard
        router.add_get("/rel/contacts", g(CONTACTS_READ, self._list_contacts))
        router.add_post("/rel/contacts", g(CONTACTS_READ, self._search_contacts))
        router.add_get("/rel/contacts/{id}", g(CONTACTS_READ, self._get_contact))
        router.add_delete("/rel/contacts/{id}", g(CONTACTS_WRITE, self._delete_contact))
        router.add_get("/lcs/shipments", g(SHIPMENTS_READ, self._list_shipments))
        router.add_post("/lcs/search/shipments", g(SHIPMENTS_READ, self._search_shipments))
        router.add_get("/lcs/shipments/{id}", g(SHIPMENTS_READ, self._get_shipment))
        router.add_delete("/lcs/shipments/{id}", g(SHIPMENTS_WRITE, self._delete_shipment))
        router.add_get("/lcs/parcels", g(PARCELS_READ, self._list_parcels))
        router.add_post("/lcs/search/parcels", g(PARCELS_READ, self._search_parcels))
        router.add_get("/lcs/parcels/{id}", g(PARCELS_READ, self._get_parcel))
        router.add_delete("/lcs/parcels/{id}", g(PARCELS_WRITE, self._delete_parcel))
        router.add_get("/cat/groups", g(PRICES_READ, self._list_groups))
        router.add_get("/cat/groups/{id}", g(PRICES_READ, self._get_group))
        router.add_delete("/cat/groups/{id}", g(PRICES_WRITE, self._delete_group))
        router.add_get("/cat/groups/{id}/prices", g(PRICES_READ, self._list_prices))
        router.add_put("/cat/groups/{id}/prices", g(PRICES_WRITE, self._put_prices))

    # -- HTTP: paging --------------------------------------------------------------------

    def _paging(self, request: web.Request) -> tuple[int, int]:
        page = _header_int(request.headers.get("x-page"), 1)
        size = _header_int(request.headers.get("x-page-size"), self.default_page_size)
        return page, min(size, self.max_page_size)

    def _page(
        self,
        request: web.Request,
        total: int,
        fetch: Callable[[int, int], list[Any]],
        *,
        with_count: bool = True,
    ) -> web.Response:
        """A bare JSON array; `x-page` always, `x-count` (the total) where documented.

        [inferred] a page past the end is `200 []`.
        """
        page, size = self._paging(request)
        headers = {"x-page": str(page)}
        if with_count:
            headers["x-count"] = str(total)
        return self.json(fetch((page - 1) * size, size), headers=headers)

    def _table_page(
        self, request: web.Request, table: LazyTable, seqs: list[int] | None, with_count: bool
    ) -> web.Response:
        if seqs is None:
            return self._page(
                request,
                len(table),
                lambda offset, limit: [table.view_json(s) for s in table.window(offset, limit)],
                with_count=with_count,
            )
        return self._page(
            request,
            len(seqs),
            lambda offset, limit: [table.view_json(s) for s in seqs[offset : offset + limit]],
            with_count=with_count,
        )

    async def _json_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400, "The request body is not valid JSON", {"invalid value": ["body"]}
            ) from exc

    def _search(
        self,
        resource: str,
        constraints: list[Constraint],
        id_key: str,
        matchers: dict[str, Callable[[dict[str, Any], frozenset[str]], bool]],
    ) -> list[int] | None:
        """Matching sequence numbers in creation order (None: every record).

        Id constraints are looked up directly; others scan the table once, and the result is
        cached until the table next changes (a client pages through the same search).
        """
        if not constraints:
            return None
        table = self._table(resource)
        key = (resource, tuple(sorted((k, tuple(sorted(v))) for k, v in constraints)))
        cached = self._search_cache.get(key)
        if cached is not None and cached[0] == table.version:
            return cached[1]
        id_sets = [values for k, values in constraints if k == id_key]
        others = [(matchers[k], values) for k, values in constraints if k != id_key]
        candidates: Iterable[int]
        if id_sets:
            wanted = frozenset.intersection(*id_sets)
            found = (table.seq_of(record_id) for record_id in wanted)
            candidates = sorted(seq for seq in found if seq is not None)
        else:
            candidates = table.order
        result = [
            seq
            for seq in candidates
            if not others or all(match(table.view(seq), values) for match, values in others)
        ]
        if len(self._search_cache) >= 32:
            self._search_cache.clear()
        self._search_cache[key] = (table.version, result)
        return result

    def _lookup(self, table: LazyTable, request: web.Request, what: str) -> int:
        record_id = request.match_info["id"]
        seq = table.seq_of(record_id)
        if seq is None:
            raise ApiError(404, f"No {what} found with id {record_id}")
        return seq

    # -- HTTP: contacts ------------------------------------------------------------------

    async def _list_contacts(self, request: web.Request) -> web.Response:
        # Documented: this list declares an x-page response header only (003:4987).
        return self._table_page(request, self._contacts, None, with_count=False)

    async def _search_contacts(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        constraints = parse_constraints(body, CONTACT_SEARCH_KEYS, "value")
        seqs = self._search("contacts", constraints, "id", {})
        # [inferred] paged like every other search, with x-count.
        return self._table_page(request, self._contacts, seqs, with_count=True)

    async def _get_contact(self, request: web.Request) -> web.Response:
        seq = self._lookup(self._contacts, request, "contact")
        record = self._contacts.full(seq)
        version = request.query.get("version")
        if version is not None and version != record["version"]:
            # [inferred] only the current version is kept: any other one is not found.
            raise ApiError(404, f"No version {version} of contact {record['id']}")
        return self.json(record)

    async def _delete_contact(self, request: web.Request) -> web.Response:
        self._contacts.remove(self._lookup(self._contacts, request, "contact"))
        return web.Response(status=204)

    # -- HTTP: shipments -----------------------------------------------------------------

    async def _list_shipments(self, request: web.Request) -> web.Response:
        return self._table_page(request, self._shipments, None, with_count=True)

    async def _search_shipments(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        constraints = parse_constraints(body, SHIPMENT_SEARCH_KEYS, "value")
        seqs = self._search("shipments", constraints, "ids", SHIPMENT_MATCHERS)
        return self._table_page(request, self._shipments, seqs, with_count=True)

    async def _get_shipment(self, request: web.Request) -> web.Response:
        seq = self._lookup(self._shipments, request, "shipment")
        return self.json(self._shipment_detail(seq))

    async def _delete_shipment(self, request: web.Request) -> web.Response:
        self._shipments.remove(self._lookup(self._shipments, request, "shipment"))
        return web.Response(status=204)

    # -- HTTP: parcels -------------------------------------------------------------------

    async def _list_parcels(self, request: web.Request) -> web.Response:
        return self._table_page(request, self._parcels, None, with_count=True)

    async def _search_parcels(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        constraints = parse_constraints(body, PARCEL_SEARCH_KEYS, "values")
        seqs = self._search("parcels", constraints, "ids", PARCEL_MATCHERS)
        return self._table_page(request, self._parcels, seqs, with_count=True)

    async def _get_parcel(self, request: web.Request) -> web.Response:
        return self.json(self._parcels.full(self._lookup(self._parcels, request, "parcel")))

    async def _delete_parcel(self, request: web.Request) -> web.Response:
        self._parcels.remove(self._lookup(self._parcels, request, "parcel"))
        return web.Response(status=204)

    # -- HTTP: price groups and prices ---------------------------------------------------

    def _group_of(self, request: web.Request) -> dict[str, Any]:
        group = self._groups.get(request.match_info["id"])
        if group is None:
            raise ApiError(404, f"No price group found with id {request.match_info['id']}")
        return group

    async def _list_groups(self, request: web.Request) -> web.Response:
        # [inferred] disabled groups stay listed, with deleted_at set.
        order, groups = self._group_order, self._groups
        return self._page(
            request,
            len(order),
            lambda offset, limit: [groups[g] for g in order[offset : offset + limit]],
        )

    async def _get_group(self, request: web.Request) -> web.Response:
        return self.json(self._group_of(request))

    async def _delete_group(self, request: web.Request) -> web.Response:
        group = self._group_of(request)
        return self.json(self.soft_delete_group(group["id"]))

    async def _list_prices(self, request: web.Request) -> web.Response:
        """Every stored price of the group (history and planned ones alike) [inferred].

        `country` / `administrative_area` filter each price's VAT lines, not the prices
        ("use to filter tax rate results", 003:3060) [inferred]; case-insensitive.
        """
        group = self._group_of(request)
        ids = self._group_prices[group["id"]]
        prices = self._prices
        # [inferred] an empty value filters nothing, like an absent one.
        country = request.query.get("country") or None
        area = request.query.get("administrative_area") or None

        def fetch(offset: int, limit: int) -> list[Any]:
            page = [prices[p] for p in ids[offset : offset + limit]]
            if country is None and area is None:
                return page
            return [dict(price, vat=_filter_vat(price["vat"], country, area)) for price in page]

        return self._page(request, len(ids), fetch)

    async def _put_prices(self, request: web.Request) -> web.Response:
        """Validate every row first (all or nothing), then upsert each (`upsert_price`)."""
        group = self._group_of(request)
        body = await self._json_body(request)
        rows = _validate_new_prices(body)
        for row in rows:
            self.upsert_price(group["id"], **row)
        # The documented answer; [inferred] it is always 1, not a count of rows.
        return self.json({"success": 1})


def _filter_vat(
    lines: list[dict[str, Any]], country: str | None, area: str | None
) -> list[dict[str, Any]]:
    def keep(line: dict[str, Any]) -> bool:
        if country is not None and str(line.get("country", "")).lower() != country.lower():
            return False
        return area is None or str(line.get("administrative_area", "")).lower() == area.lower()

    return [line for line in lines if keep(line)]


def _validate_new_prices(body: Any) -> list[dict[str, Any]]:
    """CatNewPrice rows (003:99870): `sku` and integer `amount` required; integer
    `original_amount` and RFC 3339 `active_at` optional; other fields refused [inferred]."""
    if not isinstance(body, list):
        raise ApiError(400, "Expected an array of prices", {"invalid value": ["body"]})
    errors: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []

    def bad(kind: str, path: str) -> None:
        errors.setdefault(kind, []).append(path)

    for index, item in enumerate(body):
        if not isinstance(item, dict):
            bad("invalid value", str(index))
            continue
        for name in item:
            if name not in ("sku", "amount", "original_amount", "active_at"):
                bad("invalid value", f"{index}.{name}")
        sku = item.get("sku")
        if sku is None:
            bad("required", f"{index}.sku")
        elif not isinstance(sku, str) or not sku.strip():
            bad("invalid value", f"{index}.sku")
        for name in ("amount", "original_amount"):
            value = item.get(name)
            if value is None:
                if name == "amount":
                    bad("required", f"{index}.amount")
            elif isinstance(value, bool) or not isinstance(value, int):
                bad("invalid value", f"{index}.{name}")
        active = item.get("active_at")
        if active is not None and _parse_rfc3339(active) is None:
            bad("invalid value", f"{index}.active_at")
        rows.append(
            {
                "sku": sku,
                "amount": item.get("amount"),
                "original_amount": item.get("original_amount"),
                "active_at": active,
            }
        )
    if errors:
        listed = ", ".join(p for paths in errors.values() for p in paths)
        raise ApiError(400, f"Invalid prices: {listed}", errors)
    return rows


def _demo_changes(sim: AfostoSimulator, rng: random.Random) -> str:
    shipments = sim.truth("shipments")
    for shipment in rng.sample(shipments, 6):
        sim.update_shipment(shipment["id"], is_finished=True)
    sim.delete_shipment(rng.choice(shipments)["id"])
    for _ in range(5):
        sim.insert_shipment()
    price = rng.choice(sim.truth("prices"))
    sim.upsert_price(
        price["price_group_id"], price["sku"], price["amount"] + 250, active_at=price["active_at"]
    )
    return "6 shipments finished, 5 added, 1 deleted; 1 price changed in place"


SANDBOX = SandboxSource(
    name="afosto",
    make=lambda seed, sizes: AfostoSimulator(
        contacts=sizes["contacts"],
        shipments=sizes["shipments"],
        groups=5,
        prices_per_group=60,
        seed=seed,
    ),
    credentials=lambda sim: {"token": sim.token},
    options={"max_concurrency": 4},
    sizes=(Size("shipments", 800, "Afosto shipments"), Size("contacts", 300, "Afosto contacts")),
    port=8703,
    demo_changes=_demo_changes,
    # The contacts' created/updated/deleted_at are served, which the schema declares and no
    # example renders ([inferred], SOURCES.md §1.6), so that the contract checks their columns too.
    small=lambda seed: AfostoSimulator(
        contacts=25,
        shipments=30,
        parcels=35,
        groups=3,
        prices_per_group=10,
        contacts_have_updated_at=True,
        seed=seed,
    ),
    streams={
        "contacts": SandboxStream(
            records=lambda sim: sim.truth("contacts"),
            removal=Removal({"op": "delete_contact", "id": "{id}"}),
        ),
        "shipments": SandboxStream(
            records=lambda sim: sim.truth("shipments"),
            removal=Removal({"op": "delete_shipment", "id": "{id}"}),
            unserved={
                "order_id": "only the shipment detail (LcsShipment) has it; the list shape the "
                "stream reads (LcsListedShipment, SOURCES.md §1.6) does not, so the column "
                "stays NULL",
            },
        ),
        "parcels": SandboxStream(
            records=lambda sim: sim.truth("parcels"),
            removal=Removal({"op": "delete_parcel", "id": "{id}"}),
        ),
        "prices": SandboxStream(
            records=lambda sim: sim.truth("prices"),
            removal=Removal(
                {"op": "delete_price", "id": "{id}"},  # a test-only operation
                marked_by="second sync",
                why="no detail endpoint to ask: absence from two complete scans confirms "
                "(DESIGN.md §3.4)",
            ),
        ),
    },
    # No `record`: records are rebuilt from their sequence numbers on demand (`LazyTable`), so
    # there is no stored object to break for the bad-record cases.
    faults=FaultTarget(
        stream="shipments",
        make=lambda seed: AfostoSimulator(
            contacts=3, shipments=90, parcels=3, groups=1, prices_per_group=2, seed=seed
        ),
        list_path="/lcs/shipments",
        page_size=25,
    ),
)


__all__ = [
    "DEFAULT_JWT_SECRET",
    "ISSUER",
    "READ_SCOPES",
    "WRITE_SCOPES",
    "AfostoSimulator",
    "LazyTable",
    "b64url_decode",
    "b64url_encode",
    "decode_jwt",
    "encode_jwt",
    "parse_constraints",
]
