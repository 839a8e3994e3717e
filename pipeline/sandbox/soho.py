"""Enbro Soho simulator: `/api/v1/customers` paged with Kaminari's `page`/`per` (max 25).

Why it matters to a client: paging is by offset over live, id-ordered data, so a delete
between two page requests pulls a record onto a page the client has already read, and an
insert pushes one onto the next page. The simulator does exactly that and nothing smarter.

Documented (seed 004): routes, Bearer auth and the 401 body, the list envelope, the 404 body
`"Not found"`, the 422 body, record shapes, ms-precision `Z` timestamps. Choices the seed does
not make are marked `[inferred]` and are constructor parameters where that is useful.
"""

from __future__ import annotations

import bisect
import calendar
import copy
import random
import re
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web

from . import fakedata
from .core import Simulator, account_secret, format_seconds, parse_at, reason
from .fakedata import between
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream, Size

API = "/api/v1"
# [inferred] Seeded history ends here unless the clock is earlier, so the same seed gives
# the same data on any day.
DEFAULT_HISTORY_END = datetime(2024, 1, 1, tzinfo=UTC)
LANGUAGES = ("nl", "fr", "en")
NOT_AUTHENTICATED: dict[str, Any] = {
    "status": "error",
    "errors": [
        {
            "error": "not_authenticated",
            "message": "not authenticated",
            "path": "request",
            "type": "custom",
        }
    ],
    "payload": {},
}
REQUIRED_CUSTOMER = ("email", "terms_and_conditions", "privacy_policy", "registered_from_ip")
# fmt: off
REQUIRED_PROFILE = (
    "first_name", "last_name", "title", "phone", "birth_date", "city", "street", "building",
    "postal_code",
)
PROFILE_FIELDS = (
    "id", "customer_id", "organisation_id", "title", "first_name", "last_name", "birth_date",
    "phone", "city", "street", "building", "building_addon", "postal_code", "language",
    "created_at", "updated_at",
)
# fmt: on
_RUBY_INT = re.compile(r"\s*([+-]?\d+)")


def ruby_to_i(value: str | None) -> int:
    """Ruby's `String#to_i`: leading digits or 0 (`"2abc"` is 2, `"abc"` is 0)."""
    if value is None:
        return 0
    match = _RUBY_INT.match(value)
    return int(match.group(1)) if match else 0


def epoch_ms(moment: datetime) -> int:
    moment = moment.astimezone(UTC)
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def format_ms(ms: int) -> str:
    """`2020-04-06T08:43:32.497Z`, the format of every Soho timestamp."""
    seconds, milli = divmod(ms, 1000)
    return f"{format_seconds(seconds)}.{milli:03d}Z"


def _language(roll: float) -> str:
    # [inferred] mostly Dutch, as every list example is "nl".
    return "nl" if roll < 0.8 else "fr" if roll < 0.95 else "en"


def parse_ms(text: str) -> int:
    return epoch_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


class SohoSimulator(Simulator):
    """The Soho customers API for one organisation (the token's).

    Python API for tests: `truth`, `get`, `insert_customer`, `update_customer`,
    `delete_customer`, `mutate_random`. Records are kept in the exact JSON shape served.
    """

    name: ClassVar[str] = "soho"
    json_content_type: ClassVar[str] = "application/json; charset=utf-8"

    def __init__(
        self,
        token: str = "9aa0d3fb5829cf9e4c35224d23d16877",
        customers: int = 100,
        seed: int = 1,
        organisation_id: int = 9,
        max_per: int = 25,
        default_per: int = 25,
        profile_edit_touches_customer: bool = False,
        *,
        history_end: datetime | None = None,
        history_days: float = 730.0,
        first_id: int = 3,
        **core: Any,
    ) -> None:
        super().__init__(seed=seed, **core)
        self.token = token
        self.organisation_id = organisation_id
        self.max_per = max_per
        # [inferred] the seed documents no default for `per`; Kaminari's default is 25.
        self.default_per = default_per
        # [inferred] whether a profile edit bumps customer.updated_at is undocumented.
        self.profile_edit_touches_customer = profile_edit_touches_customer
        self._customers: dict[int, dict[str, Any]] = {}
        self._ids: list[int] = []
        self._emails: dict[str, int] = {}
        self._next_id = first_id
        self._next_profile_id = 1
        self._data_rng = random.Random(seed)
        end = history_end or min(DEFAULT_HISTORY_END, self.clock())
        self._history_end_ms = epoch_ms(end)
        self._history_days = history_days
        self.organisation = self._make_organisation()
        self._seed_customers(customers)

    # -- seeded data ---------------------------------------------------------------------

    def _make_organisation(self) -> dict[str, Any]:
        rng = self._data_rng
        company = fakedata.company(rng)
        a, b, c = (fakedata.last_name(rng) for _ in range(3))
        created = self._history_end_ms - int(self._history_days * 86_400_000) - 86_400_000
        return {
            "id": self.organisation_id,
            "name": company,
            "domain": fakedata.domain(f"{a}{b}-{c}".replace("'", ""), self.organisation_id),
            "created_at": format_ms(created),
        }

    def _seed_customers(self, count: int) -> None:
        rng = self._data_rng
        end = self._history_end_ms
        span = int(self._history_days * 86_400_000)
        start = end - span
        rand = rng.random
        created_times = sorted(start + int(rand() * span) for _ in range(count))
        for created in created_times:
            if rand() < 0.05:  # ids skipped by long-gone records, as in any real table
                self._next_id += between(rng, 1, 3)
            updated = created
            if rand() < 0.25:
                updated = created + int(rand() * (end - created))
            profile_created = created + between(rng, 2, 9)
            profile_updated = profile_created
            if rand() < 0.3:
                profile_updated = profile_created + int(rand() * max(0, end - profile_created))
            if self.profile_edit_touches_customer:
                updated = max(updated, profile_updated)
            self._store(self._new_record(rng, created, updated, profile_created, profile_updated))

    def _new_record(
        self,
        rng: random.Random,
        created: int,
        updated: int,
        profile_created: int,
        profile_updated: int,
        overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        overrides = dict(overrides or {})
        profile_overrides = dict(overrides.pop("profile", None) or {})
        first, last = fakedata.first_name(rng), fakedata.last_name(rng)
        customer_id = int(overrides.pop("id", None) or self._next_id)
        self._next_id = max(self._next_id, customer_id + 1)
        profile_id = self._next_profile_id
        self._next_profile_id += 1
        email = overrides.pop("email", None) or self._unique_email(rng, first, last)
        profile: dict[str, Any] = {
            "id": profile_id,
            "customer_id": customer_id,
            "organisation_id": self.organisation_id,
            "title": "mr" if rng.random() < 0.7 else "mrs",  # [inferred] the seed shows "mr"
            "first_name": first,
            "last_name": last,
            "birth_date": fakedata.birth_date(rng),
            "phone": fakedata.phone(rng),
            "city": fakedata.city(rng),
            "street": fakedata.street(rng),
            "building": fakedata.building(rng),
            "building_addon": fakedata.building_addon(rng),
            "postal_code": fakedata.postal_code(rng),
            "language": _language(rng.random()),
            "created_at": format_ms(profile_created),
            "updated_at": format_ms(profile_updated),
        }
        if rng.random() < 0.3:  # building_addon is absent, not null, when never set
            del profile["building_addon"]
        if profile_overrides:
            profile.update(profile_overrides)
            profile = _ordered_profile({k: v for k, v in profile.items() if v is not None})
        record: dict[str, Any] = {
            "id": customer_id,
            "email": email,
            "created_at": format_ms(created),
            "updated_at": format_ms(updated),
            "profile": profile,
        }
        record.update(overrides)
        return record

    def _unique_email(self, rng: random.Random, first: str, last: str) -> str:
        email = fakedata.email(rng, first, last)
        while email.lower() in self._emails:
            local, _, host = email.partition("@")
            email = f"{local}{between(rng, 1, 9999)}@{host}"
        return email

    def _store(self, record: dict[str, Any]) -> None:
        customer_id = record["id"]
        if customer_id not in self._customers:
            bisect.insort(self._ids, customer_id)
        self._customers[customer_id] = record
        self._emails[record["email"].lower()] = customer_id
        self._next_id = max(self._next_id, customer_id + 1)

    # -- Python API ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def truth(self) -> list[dict[str, Any]]:
        """Every customer as the API would serve it, in id order (deep copies)."""
        return [copy.deepcopy(self._customers[i]) for i in self._ids]

    def get(self, customer_id: int) -> dict[str, Any] | None:
        record = self._customers.get(customer_id)
        return copy.deepcopy(record) if record is not None else None

    def _now_ms(self, at: datetime | None) -> int:
        return epoch_ms(at if at is not None else self.clock())

    def insert_customer(self, *, at: datetime | None = None, **overrides: Any) -> dict[str, Any]:
        """Create a customer as `POST /customers` would; `overrides` replace generated fields.

        `profile=` merges into the generated profile (a None value removes a field, e.g.
        `building_addon`). The id is the next in sequence unless `id=` is given; ids are never
        reused. `updated_at` is `at` (or the clock); the other timestamps are a few ms earlier,
        as in the seed's create example.
        """
        now = self._now_ms(at)
        email = overrides.get("email")
        if email is not None and email.lower() in self._emails:
            raise ValueError(f"email {email!r} is already registered")
        if overrides.get("id") in self._customers:
            raise ValueError(f"customer {overrides['id']} already exists")
        record = self._new_record(self._data_rng, now - 19, now, now - 17, now - 17, overrides)
        self._store(record)
        return copy.deepcopy(record)

    def update_customer(
        self,
        customer_id: int,
        *,
        email: str | None = None,
        profile: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Edit a customer. Customer edits (or a bare call: a touch) bump `updated_at`;
        profile edits bump `profile.updated_at`, and `updated_at` only when
        `profile_edit_touches_customer`. A profile value of None removes the field."""
        record = self._customers[customer_id]
        stamp = format_ms(self._now_ms(at))
        touch_customer = email is not None or profile is None
        if email is not None:
            owner = self._emails.get(email.lower())
            if owner is not None and owner != customer_id:
                raise ValueError(f"email {email!r} is already registered")
            self._emails.pop(record["email"].lower(), None)
            record["email"] = email
            self._emails[email.lower()] = customer_id
        if profile is not None:
            merged = dict(record["profile"])
            for key, value in profile.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            merged["updated_at"] = stamp
            record["profile"] = _ordered_profile(merged)
            touch_customer = touch_customer or self.profile_edit_touches_customer
        if touch_customer:
            record["updated_at"] = stamp
        return copy.deepcopy(record)

    def delete_customer(self, customer_id: int) -> dict[str, Any]:
        """Hard delete, as the API has no tombstones; raises KeyError when absent."""
        record = self._customers.pop(customer_id)
        index = bisect.bisect_left(self._ids, customer_id)
        del self._ids[index]
        self._emails.pop(record["email"].lower(), None)
        return record

    def mutate_random(
        self,
        fraction: float,
        rng: random.Random | None = None,
        *,
        inserts: int = 0,
        deletes: int = 0,
        at: datetime | None = None,
    ) -> dict[str, list[int]]:
        """Update about `fraction` of customers (email or profile), then insert and delete
        some: a day's churn for benchmarks. Returns the ids touched per operation."""
        rng = rng or random.Random(self.seed + 1)
        updated = rng.sample(self._ids, k=min(len(self._ids), round(len(self._ids) * fraction)))
        for customer_id in updated:
            if rng.random() < 0.5:
                self.update_customer(customer_id, profile={"city": fakedata.city(rng)}, at=at)
            else:
                first = self._customers[customer_id]["profile"]["first_name"]
                email = self._unique_email(rng, first, fakedata.last_name(rng))
                self.update_customer(customer_id, email=email, at=at)
        deleted = rng.sample(self._ids, k=min(len(self._ids), deletes))
        for customer_id in deleted:
            self.delete_customer(customer_id)
        inserted = [self.insert_customer(at=at)["id"] for _ in range(inserts)]
        return {"updated": updated, "inserted": inserted, "deleted": deleted}

    def mutate(self, spec: dict[str, Any]) -> Any:
        """Control-route mutations: `{"op": "insert"|"update"|"delete"|"random", ...}`."""
        spec = dict(spec)
        op = spec.pop("op", None)
        at = parse_at(spec.pop("at", None))
        if op == "insert":
            return self.insert_customer(at=at, **spec)
        if op == "update":
            return self.update_customer(
                int(spec["id"]), email=spec.get("email"), profile=spec.get("profile"), at=at
            )
        if op == "delete":
            self.delete_customer(int(spec["id"]))
            return {"deleted": int(spec["id"])}
        if op == "random":
            return self.mutate_random(
                float(spec.get("fraction", 0.1)),
                random.Random(spec.get("seed", self.seed + 1)),
                inserts=int(spec.get("inserts", 0)),
                deletes=int(spec.get("deletes", 0)),
                at=at,
            )
        raise ValueError(f"unknown op {op!r}; use insert, update, delete or random")

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "seed": self.seed,
            "base_path": API,
            "token": self.token,
            "organisation_id": self.organisation_id,
            "customers": len(self._ids),
        }

    # -- HTTP ----------------------------------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> bytes:
        if status == 401:
            return orjson.dumps(NOT_AUTHENTICATED)
        if status == 404:  # documented for a missing id; [inferred] for unknown routes too
            return orjson.dumps("Not found")
        phrase = reason(status)
        error = {
            "error": re.sub(r"\W+", "_", phrase.lower()).strip("_"),
            "message": message or phrase.lower(),
            "path": "request",
            "type": "custom",
        }
        if status == 422:
            return orjson.dumps({"errors": [error]})
        # [inferred] other statuses (429, 5xx) reuse the 401 envelope.
        return orjson.dumps({"status": "error", "errors": [error], "payload": {}})

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{API}/ping", self._ping)
        router.add_get(f"{API}/me", self._me)
        router.add_get(f"{API}/customers", self._list)
        router.add_post(f"{API}/customers", self._create)
        router.add_get(API + "/customers/{id}", self._show)

    def _authorised(self, request: web.Request) -> bool:
        # Exactly `Bearer <token>`; the seed's 401 example sends the bare token.
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    # -- accounts ------------------------------------------------------------------------

    def assign_credentials(self, name: str) -> None:
        self.token = account_secret(self.name, name, "token")

    async def claims(self, request: web.Request) -> bool:
        # The token is the only credential, so it is both who and whether.
        return self._authorised(request)

    async def _ping(self, request: web.Request) -> web.Response:
        return self.json({})

    async def _me(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self.error_response(401)
        return self.json(self.organisation)

    async def _list(self, request: web.Request) -> web.Response:
        """Kaminari `Customer.order(:id).page(page).per(per)` with `max_per_page` 25.

        [inferred] Order by id ascending (the seed's example ids ascend), offset paging over
        live data. Kaminari semantics throughout: `page` goes through `to_i` and < 1 means 1;
        `per` that is absent, negative or does not start with a digit means the default, a
        larger one is clamped silently, and 0 makes Kaminari raise (a 500).
        `total_pages` is ceil(count / per), which is 0 for an empty collection; past the last
        page `records` is empty and both `next_page` and `prev_page` are null.
        """
        if not self._authorised(request):
            return self.error_response(401)
        page = max(ruby_to_i(request.query.get("page")), 1)
        raw_per = request.query.get("per")
        if raw_per is None or not raw_per[:1].isdigit():
            per = self.default_per
        else:
            per = ruby_to_i(raw_per)
            if per == 0:
                return self.error_response(500, "ZeroPerPageOperation")
            per = min(per, self.max_per)
        total_pages = -(-len(self._ids) // per)
        offset = (page - 1) * per
        customers = self._customers
        records = [customers[i] for i in self._ids[offset : offset + per]]
        out_of_range = page > total_pages
        body = {
            "current_page": page,
            "limit_value": per,
            "next_page": None if out_of_range or page == total_pages else page + 1,
            "prev_page": None if out_of_range or page == 1 else page - 1,
            "total_pages": total_pages,
            "records": records,
        }
        return self.json(body)

    async def _show(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self.error_response(401)
        # [inferred] ActiveRecord casts the id with to_i: "12abc" finds 12, "abc" nothing.
        record = self._customers.get(ruby_to_i(request.match_info["id"]))
        if record is None:
            return self.error_response(404)
        return self.json(record)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self.error_response(401)
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            # [inferred] Rails answers unparseable JSON with 400.
            return self.error_response(400, "request body is not valid JSON")
        customer = body.get("customer") if isinstance(body, dict) else None
        errors = _validate_create(customer)
        if errors:
            return self.json({"errors": errors}, status=422)
        assert isinstance(customer, dict)
        if str(customer["email"]).lower() in self._emails:
            return self.json(
                {
                    "errors": [
                        {
                            "error": "confirmed_email_has_already_been_taken",
                            "message": "it is already registered",
                            "path": "customer.email",
                            "type": "custom",
                        }
                    ]
                },
                status=422,
            )
        given = customer["profile"]
        profile = {key: str(given[key]) for key in REQUIRED_PROFILE}
        profile["phone"] = fakedata.normalise_phone(profile["phone"])
        profile["language"] = given.get("language") or "nl"
        # Absent, not null, when not given (004:178-194).
        addon = given.get("building_addon")
        profile["building_addon"] = str(addon) if addon else None
        return self.json(self.insert_customer(email=str(customer["email"]), profile=profile))


def _validate_create(customer: Any) -> list[dict[str, Any]]:
    """422 errors for a create body. [inferred] The seed shows `type: params` errors
    (`has_already_been_taken`); missing fields use the same shape with `is_missing`."""

    def missing(path: str) -> dict[str, Any]:
        return {"error": "is_missing", "message": "is missing", "path": path, "type": "params"}

    if not isinstance(customer, dict):
        return [missing("customer")]
    errors = [
        missing(f"customer.{key}") for key in REQUIRED_CUSTOMER if customer.get(key) in (None, "")
    ]
    profile = customer.get("profile")
    if not isinstance(profile, dict):
        errors.append(missing("customer.profile"))
        return errors
    errors += [
        missing(f"customer.profile.{key}")
        for key in REQUIRED_PROFILE
        if profile.get(key) in (None, "")
    ]
    language = profile.get("language")
    if language not in (None, "") and language not in LANGUAGES:
        errors.append(
            {
                "error": "does_not_have_a_valid_value",
                "message": "does not have a valid value",
                "path": "customer.profile.language",
                "type": "params",
            }
        )
    return errors


def _ordered_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Keep the seed's key order; extra keys (from overrides) go last."""
    ordered = {key: profile[key] for key in PROFILE_FIELDS if key in profile}
    ordered.update({k: v for k, v in profile.items() if k not in ordered})
    return ordered


def random_token() -> str:
    """A token shaped like the seed's: 32 lowercase hex characters."""
    return secrets.token_hex(16)


def _demo_changes(sim: SohoSimulator, rng: random.Random) -> str:
    customer_ids = [c["id"] for c in sim.truth()]
    edited = rng.sample(customer_ids, 8)
    for cid in edited[:5]:
        sim.update_customer(cid, email=f"changed.{cid}@example.org")
    for cid in edited[5:]:
        sim.update_customer(cid, profile={"city": "Gent"})
    for _ in range(4):
        sim.insert_customer()
    for cid in rng.sample([c for c in customer_ids if c not in edited], 2):
        sim.delete_customer(cid)
    return "8 customers edited, 4 added, 2 deleted"


SANDBOX = SandboxSource(
    name="soho",
    make=lambda seed, sizes: SohoSimulator(customers=sizes["customers"], seed=seed),
    credentials=lambda sim: {"token": sim.token},
    api_path=API,
    options={"max_concurrency": 4},
    sizes=(Size("customers", 500, "Soho customers"),),
    port=8701,
    demo_changes=_demo_changes,
    small=lambda seed: SohoSimulator(customers=40, seed=seed),
    streams={
        "customers": SandboxStream(
            records=lambda sim: sim.truth(),
            removal=Removal({"op": "delete", "id": "{id}"}),
        ),
    },
    faults=FaultTarget(
        stream="customers",
        make=lambda seed: SohoSimulator(customers=80, seed=seed),
        list_path=f"{API}/customers",
        page_size=25,
        record=lambda sim, i: sim._customers[sim.ids[i]],
    ),
)

__all__ = ["SANDBOX", "SohoSimulator", "format_ms", "random_token", "ruby_to_i"]
