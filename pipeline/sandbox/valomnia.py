"""Valomnia "Authorities" v2.1 simulator: offset/max paging with server-side date filters.

Why it matters to a client: this is the one source that filters and sorts on the cursor
(`lastUpdated_gte` + `sort=lastUpdated`), with one-second timestamps and many records sharing a
second (bulk imports), so a seek pager must page by offset within a tie. Seeded data has such
ties on purpose.

Documented (seed 002): parameters, the strict rejection of unknown ones, the exact date format,
the envelope, error bodies, show/create/update/delete. [ext] (SOURCES §4.1): the Spring
Security session login. Everything else is `[inferred]` and mostly a constructor parameter.

The list endpoint answers sort=lastUpdated/dateCreated with a range on the same field in
O(log N + page) from sorted `(value, id)` indexes kept up to date with bisect; other shapes
filter and sort once and cache the ordered ids until the next mutation.
"""

from __future__ import annotations

import bisect
import calendar
import random
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web

from . import fakedata
from .core import Simulator, account_secret, format_seconds, parse_at, reason
from .fakedata import between
from .spec import FaultTarget, Removal, SandboxSource, SandboxStream, Size

# [inferred] Seeded history ends here unless the clock is earlier (same seed, same data).
DEFAULT_HISTORY_END = datetime(2024, 1, 1, tzinfo=UTC)
DATE_FIELDS = ("dateCreated", "lastUpdated")
DATE_PARAMS = tuple(f"{f}_{op}" for f in DATE_FIELDS for op in ("gt", "gte", "lt", "lte"))
LIST_PARAMS = frozenset(("max", "offset", "sort", "order", "name", *DATE_PARAMS))
SORT_FIELDS = ("id", "name", "dateCreated", "lastUpdated")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_INT_RE = re.compile(r"[+-]?\d+")
UNAUTHORIZED_DESCRIPTION = "Full authentication is required to access this resource"
SERVER_ERROR_DESCRIPTION = "Oops! Something went wrong..."
DELETED_DESCRIPTION = "Instance deleted successfully"
LOGIN_PATH = "/j_spring_security_check"


async def _login_fields(request: web.Request) -> tuple[Any, Any]:
    """`(j_username, j_password)` from the form body or the query string, as getParameter
    reads them (the body is kept: reading it twice is free)."""
    form = await request.post()
    username = form.get("j_username", request.query.get("j_username"))
    return username, form.get("j_password", request.query.get("j_password"))


def epoch_s(moment: datetime) -> int:
    """Whole seconds since the epoch, floored (records have second precision)."""
    return calendar.timegm(moment.astimezone(UTC).utctimetuple())


def format_s(seconds: int) -> str:
    """`2017-01-17T10:30:12Z`: the record format, and the only accepted filter format."""
    return format_seconds(seconds) + "Z"


def parse_filter_date(value: str) -> int | None:
    """Epoch seconds of an exact `YYYY-MM-DDTHH:MM:SSZ`, or None when anything else."""
    if not _DATE_RE.fullmatch(value):
        return None
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


class ApiError(Exception):
    """An `{error, error_description}` answer raised from deep inside a handler."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _invalid_param(names: Iterable[str]) -> ApiError:
    listed = ", ".join(names)
    description = f"The parameters [{listed}] you provided are not valid for this request."
    return ApiError(400, "invalid_param", description)


def _invalid_type(name: str) -> ApiError:
    return ApiError(
        400,
        "invalid_param_type",
        f"The type of parameter {name} you provided is not valid for this request.",
    )


def _not_found(key: object) -> ApiError:
    return ApiError(404, "not_found", f"The authority with the id {key} doesn't exist.")


class _SortedKeys:
    """Sorted `(primary, id)` tuples; a range on `primary` costs two bisects."""

    def __init__(self, keys: Iterable[tuple[int, int]]) -> None:
        self.keys = sorted(keys)

    def add(self, key: tuple[int, int]) -> None:
        bisect.insort(self.keys, key)

    def remove(self, key: tuple[int, int]) -> None:
        index = bisect.bisect_left(self.keys, key)
        if index < len(self.keys) and self.keys[index] == key:
            del self.keys[index]

    def span(self, lo: int | None, hi: int | None) -> tuple[int, int]:
        """Positions [i, j) of keys whose primary is within [lo, hi] (inclusive)."""
        i = 0 if lo is None else bisect.bisect_left(self.keys, (lo,))
        j = len(self.keys) if hi is None else bisect.bisect_left(self.keys, (hi + 1,))
        return i, max(i, j)


class ValomniaSimulator(Simulator):
    """The authorities resource of the Valomnia API, behind a Spring Security session login.

    Python API for tests: `truth`, `get`, `insert`, `update`, `delete`, `expire_sessions`,
    `login_count`.
    """

    name: ClassVar[str] = "valomnia"
    # [inferred] Grails/Tomcat's spelling of the JSON content type.
    json_content_type: ClassVar[str] = "application/json;charset=UTF-8"

    def __init__(
        self,
        username: str = "etl@example.com",
        password: str = "sandbox-password",
        api_token: str | None = None,
        authorities: int = 100,
        seed: int = 1,
        version: str = "v2.1",
        session_ttl_seconds: float = 1800,
        max_page_size: int = 1000,
        login_redirect: bool = True,
        *,
        default_max: int = 100,
        update_not_found_status: int = 400,
        history_end: datetime | None = None,
        history_days: float = 730.0,
        **core: Any,
    ) -> None:
        super().__init__(seed=seed, **core)
        self.username = username
        self.password = password
        self.api_token = api_token
        self.version = version
        self.session_ttl_seconds = session_ttl_seconds
        # [inferred] no maximum is documented; larger `max` values are clamped silently.
        self.max_page_size = max_page_size
        self.default_max = default_max
        self.login_redirect = login_redirect
        # [inferred] from the doc's layout: update's `not_found` is listed under
        # "status = 400" (002:180-183), unlike show and delete (404).
        self.update_not_found_status = update_not_found_status
        self.login_count = 0
        self._sessions: dict[str, tuple[str, datetime]] = {}
        self._session_rng = random.Random(seed * 104729 + 3)
        self._data_rng = random.Random(seed)
        self._titles = fakedata.JobTitles(self._data_rng)
        self._records: dict[int, dict[str, Any]] = {}
        self._created: dict[int, int] = {}
        self._updated: dict[int, int] = {}
        self._names: dict[str, int] = {}
        self._ids: list[int] = []
        self._version_counter = 0
        self._cache: dict[tuple[Any, ...], list[int]] = {}
        self._next_id = 1
        end = history_end or min(DEFAULT_HISTORY_END, self.clock())
        self._seed_authorities(authorities, epoch_s(end), int(history_days * 86_400))

    # -- seeded data ---------------------------------------------------------------------

    def _seed_authorities(self, count: int, end: int, span: int) -> None:
        """Creation times come in bursts (bulk imports share one second), and about a third of
        the records were edited later, partly by bulk edits that also share a second."""
        rng = self._data_rng
        start = end - span
        burst_max = min(150, max(3, count // 8))
        created: list[int] = []
        rand = rng.random
        while len(created) < count:
            moment = start + int(rand() * span)
            size = between(rng, 3, burst_max) if rand() < 0.1 else 1
            created.extend([moment] * size)
        created = sorted(created[:count])
        updated = list(created)
        budget = int(count * 0.35)
        while budget > 0 and count:
            moment = start + int(rand() * span)
            known = bisect.bisect_right(created, moment)
            size = between(rng, 3, burst_max) if rand() < 0.1 else 1
            budget -= size
            for _ in range(min(size, known)):
                index = int(rand() * known)
                updated[index] = max(updated[index], moment)
        next_id = 1
        for made, edited in zip(created, updated, strict=True):
            if rand() < 0.05:  # ids left behind by deleted records
                next_id += between(rng, 1, 4)
            name = self._titles.draw(self._names)
            self._put(next_id, name, made, edited)
            next_id += 1
        self._next_id = next_id
        self._build_indexes()

    def _put(self, authority_id: int, name: str, created: int, updated: int) -> None:
        self._records[authority_id] = {
            "id": authority_id,
            "name": name,
            "dateCreated": format_s(created),
            "lastUpdated": format_s(updated),
        }
        self._created[authority_id] = created
        self._updated[authority_id] = updated
        self._names[name] = authority_id

    def _build_indexes(self) -> None:
        self._ids = sorted(self._records)
        self._index = {
            ("lastUpdated", "asc"): _SortedKeys((v, i) for i, v in self._updated.items()),
            ("lastUpdated", "desc"): _SortedKeys((-v, i) for i, v in self._updated.items()),
            ("dateCreated", "asc"): _SortedKeys((v, i) for i, v in self._created.items()),
            ("dateCreated", "desc"): _SortedKeys((-v, i) for i, v in self._created.items()),
        }

    def _index_add(self, authority_id: int) -> None:
        for field, values in (("lastUpdated", self._updated), ("dateCreated", self._created)):
            value = values[authority_id]
            self._index[(field, "asc")].add((value, authority_id))
            self._index[(field, "desc")].add((-value, authority_id))

    def _index_remove(self, authority_id: int) -> None:
        for field, values in (("lastUpdated", self._updated), ("dateCreated", self._created)):
            value = values[authority_id]
            self._index[(field, "asc")].remove((value, authority_id))
            self._index[(field, "desc")].remove((-value, authority_id))

    def _changed(self) -> None:
        self._version_counter += 1
        self._cache.clear()

    # -- Python API ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def truth(self) -> list[dict[str, Any]]:
        """Every authority as served, in id order (copies)."""
        return [dict(self._records[i]) for i in self._ids]

    def get(self, authority_id: int) -> dict[str, Any] | None:
        record = self._records.get(authority_id)
        return dict(record) if record is not None else None

    def by_name(self, name: str) -> dict[str, Any] | None:
        authority_id = self._names.get(name)
        return None if authority_id is None else self.get(authority_id)

    def _stamp(self, at: datetime | None) -> int:
        return epoch_s(at if at is not None else self.clock())

    def insert(self, name: str | None = None, at: datetime | None = None) -> dict[str, Any]:
        """Create an authority; both dates are `at` (or the clock) floored to the second."""
        if name is None:
            name = self._titles.draw(self._names)
        elif name in self._names:
            raise ValueError(f"authority {name!r} already exists")
        stamp = self._stamp(at)
        authority_id = self._next_id
        self._next_id += 1
        self._put(authority_id, name, stamp, stamp)
        bisect.insort(self._ids, authority_id)
        self._index_add(authority_id)
        self._changed()
        return dict(self._records[authority_id])

    def update(
        self, authority_id: int, name: str | None = None, at: datetime | None = None
    ) -> dict[str, Any]:
        """Rename (or just touch) an authority: `lastUpdated` becomes `at` or the clock,
        floored to the second. Raises KeyError when absent, ValueError on a taken name."""
        record = self._records[authority_id]
        if name is not None and name != record["name"]:
            if name in self._names:
                raise ValueError(f"authority {name!r} already exists")
            del self._names[record["name"]]
            self._names[name] = authority_id
            record["name"] = name
        self._index_remove(authority_id)
        stamp = self._stamp(at)
        self._updated[authority_id] = stamp
        record["lastUpdated"] = format_s(stamp)
        self._index_add(authority_id)
        self._changed()
        return dict(record)

    def delete(self, authority_id: int) -> dict[str, Any]:
        """Hard delete (the API has no tombstones); raises KeyError when absent."""
        record = self._records[authority_id]
        self._index_remove(authority_id)
        del self._records[authority_id]
        del self._created[authority_id]
        del self._updated[authority_id]
        del self._names[record["name"]]
        del self._ids[bisect.bisect_left(self._ids, authority_id)]
        self._changed()
        return record

    def restore(self, record: dict[str, Any]) -> dict[str, Any]:
        """Bring a deleted authority back with its id and dates (a restore from a backup at the
        source): the case a reconcile must notice, since no list filter shows it."""
        authority_id = int(record["id"])
        if authority_id in self._records:
            raise ValueError(f"authority {authority_id} exists")
        created = int(datetime.fromisoformat(record["dateCreated"]).timestamp())
        updated = int(datetime.fromisoformat(record["lastUpdated"]).timestamp())
        self._put(authority_id, record["name"], created, updated)
        bisect.insort(self._ids, authority_id)
        self._index_add(authority_id)
        self._changed()
        return dict(self._records[authority_id])

    def expire_sessions(self) -> int:
        """Invalidate every session (as a server restart would); returns how many."""
        count = len(self._sessions)
        self._sessions.clear()
        return count

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    def mutate(self, spec: dict[str, Any]) -> Any:
        """Control-route mutations: `{"op": "insert"|"update"|"delete", "id", "name", "at"}`."""
        op = spec.get("op")
        at = parse_at(spec.get("at"))
        if op == "insert":
            return self.insert(spec.get("name"), at)
        if op == "update":
            return self.update(int(spec["id"]), spec.get("name"), at)
        if op == "delete":
            self.delete(int(spec["id"]))
            return {"deleted": int(spec["id"])}
        raise ValueError(f"unknown op {op!r}; use insert, update or delete")

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "seed": self.seed,
            "base_path": f"/api/{self.version}",
            "login_path": LOGIN_PATH,
            "username": self.username,
            "password": self.password,
            "api_token": self.api_token,
            "authorities": len(self._ids),
        }

    def add_control_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sandbox/expire_sessions", self._ctl_expire_sessions)

    async def _ctl_expire_sessions(self, request: web.Request) -> web.Response:
        return self._ctl_json({"expired": self.expire_sessions()})

    # -- querying ------------------------------------------------------------------------

    def query(
        self,
        *,
        bounds: dict[str, tuple[int | None, int | None]] | None = None,
        name: str | None = None,
        sort: str = "id",
        order: str = "asc",
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[int, list[dict[str, Any]]]:
        """`(total, page)` for inclusive epoch-second `bounds` per date field.

        Ties on the sort field are ordered by id ascending in both directions [inferred].
        """
        bounds = {f: b for f, b in (bounds or {}).items() if b != (None, None)}
        records = self._records
        if name is None and sort in DATE_FIELDS and set(bounds) <= {sort}:
            index = self._index[(sort, order)]
            lo, hi = bounds.get(sort, (None, None))
            if order == "desc":
                lo, hi = (None if hi is None else -hi), (None if lo is None else -lo)
            i, j = index.span(lo, hi)
            start = min(j, i + offset)
            keys = index.keys[start : min(j, start + limit)]
            return j - i, [records[k[1]] for k in keys]
        if name is None and sort == "id" and not bounds:
            total = len(self._ids)
            if order == "asc":
                ids = self._ids[offset : offset + limit]
            else:
                stop = max(0, total - offset)
                ids = self._ids[max(0, stop - limit) : stop][::-1]
            return total, [records[i] for i in ids]
        ordered = self._ordered_ids(bounds, name, sort, order)
        return len(ordered), [records[i] for i in ordered[offset : offset + limit]]

    def _ordered_ids(
        self,
        bounds: dict[str, tuple[int | None, int | None]],
        name: str | None,
        sort: str,
        order: str,
    ) -> list[int]:
        key = (tuple(sorted(bounds.items())), name, sort, order)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if bounds:
            # Narrow with one date index, then check the remaining conditions.
            field = next(iter(sorted(bounds)))
            lo, hi = bounds[field]
            index = self._index[(field, "asc")]
            i, j = index.span(lo, hi)
            candidates: Iterable[int] = (k[1] for k in index.keys[i:j])
        else:
            candidates = self._ids
        values = {"dateCreated": self._created, "lastUpdated": self._updated}
        checks = [(values[f], lo, hi) for f, (lo, hi) in bounds.items()]
        matcher = _name_matcher(name) if name is not None else None
        records = self._records
        selected = [
            i
            for i in candidates
            if all(
                (lo is None or v[i] >= lo) and (hi is None or v[i] <= hi) for v, lo, hi in checks
            )
            and (matcher is None or matcher(records[i]["name"]))
        ]
        descending = order == "desc"
        if sort == "id":
            selected.sort(reverse=descending)
        elif sort == "name":
            # [inferred] case-insensitive name order; names are unique, so ids rarely matter.
            selected.sort(key=lambda i: (records[i]["name"].lower(), i))
            if descending:
                selected.reverse()
        else:
            column = values[sort]
            sign = -1 if descending else 1
            selected.sort(key=lambda i: (sign * column[i], i))
        if len(self._cache) > 16:
            self._cache.clear()
        self._cache[key] = selected
        return selected

    # -- HTTP ----------------------------------------------------------------------------

    def error_body(self, status: int, message: str | None = None) -> bytes:
        """[inferred] except the documented 500 body: codes for 401/404/429/other statuses."""
        if status == 401:
            error, description = "unauthorized", UNAUTHORIZED_DESCRIPTION
        elif status == 404:
            error, description = "not_found", "The requested resource is not available."
        elif status >= 500:
            error, description = "server_error", SERVER_ERROR_DESCRIPTION  # documented for 500
        elif status == 429:
            error, description = "too_many_requests", "Too many requests, slow down."
        else:
            phrase = reason(status)
            error, description = re.sub(r"\W+", "_", phrase.lower()).strip("_"), phrase
        return orjson.dumps({"error": error, "error_description": message or description})

    def _api_error(self, exc: ApiError) -> web.Response:
        return self.json({"error": exc.error, "error_description": exc.description}, exc.status)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(LOGIN_PATH, self._login)
        router.add_get("/login/ajaxSuccess", self._ajax_success)
        base = "/api/{version}/authorities"
        router.add_get(base, self._list)
        router.add_post(base, self._create)
        router.add_get(base + "/reference/{name}", self._show)
        router.add_put(base + "/reference/{name}", self._update)
        router.add_delete(base + "/reference/{name}", self._delete)
        router.add_get(base + "/{id}", self._show)
        router.add_put(base + "/{id}", self._update)
        router.add_delete(base + "/{id}", self._delete)

    # auth

    def _new_session(self, username: str) -> str:
        session_id = "".join(self._session_rng.choices("0123456789ABCDEF", k=32))
        self._sessions[session_id] = (username, self.clock())
        return session_id

    def _session_user(self, request: web.Request) -> tuple[str, str] | None:
        """`(session_id, username)` of a live session; [inferred] the TTL is an inactivity
        timeout measured on the simulator clock, renewed by every use (Tomcat's rule)."""
        session_id = request.cookies.get("JSESSIONID")
        if session_id is None or session_id not in self._sessions:
            return None
        username, last_used = self._sessions[session_id]
        now = self.clock()
        if (now - last_used).total_seconds() >= self.session_ttl_seconds:
            del self._sessions[session_id]
            return None
        self._sessions[session_id] = (username, now)
        return session_id, username

    # -- accounts ------------------------------------------------------------------------

    def assign_credentials(self, name: str) -> None:
        self.username = f"etl.{name}@example.com"
        self.password = account_secret(self.name, name, "password", 24)
        if self.api_token is not None:
            self.api_token = account_secret(self.name, name, "api_token")
        # Session ids are drawn from a seeded RNG: two accounts of one seed would share them.
        self._session_rng = random.Random(account_secret(self.name, name, "sessions"))

    async def claims(self, request: web.Request) -> bool:
        """Logins naming its user (whatever session they carry), then its sessions and its
        static token."""
        if request.path == LOGIN_PATH:
            username, _ = await _login_fields(request)
            return username == self.username
        if request.cookies.get("JSESSIONID") in self._sessions:
            return True
        header = request.headers.get("Authorization")
        return self.api_token is not None and header == f"Bearer {self.api_token}"

    def _authorised(self, request: web.Request) -> bool:
        if self._session_user(request) is not None:
            return True
        # [inferred] the alternative static-token scheme.
        header = request.headers.get("Authorization")
        return self.api_token is not None and header == f"Bearer {self.api_token}"

    async def _login(self, request: web.Request) -> web.Response:
        """[ext] Spring Security form login. [inferred] `ajax=true` changes nothing here;
        credentials may come in the form body or the query string, as getParameter allows."""
        username, password = await _login_fields(request)
        if username != self.username or password != self.password:
            # [inferred] failure shape: the API's own `{error, error_description}`.
            return self.json(
                {
                    "error": "invalid_credentials",
                    "error_description": "Sorry, we were not able to find a user with that "
                    "username and password.",
                },
                status=401,
            )
        self.login_count += 1
        session_id = self._new_session(self.username)
        if self.login_redirect:
            location = str(request.url.with_path("/login/ajaxSuccess").with_query(None))
            response = web.Response(status=302, headers={"Location": location})
        else:
            response = self.json(self._success_body(session_id))
        response.set_cookie("JSESSIONID", session_id, path="/", httponly=True)
        return response

    def _success_body(self, session_id: str) -> dict[str, Any]:
        return {"success": True, "username": self.username, "token": session_id}

    async def _ajax_success(self, request: web.Request) -> web.Response:
        session = self._session_user(request)
        if session is None:
            return self.error_response(401)  # [inferred]
        return self.json(self._success_body(session[0]))

    def _guard(self, request: web.Request) -> web.Response | None:
        """401 without a live session or token, then 404 for another API version.

        [inferred] Spring Security's filter runs before dispatch, so auth is checked first.
        """
        if not self._authorised(request):
            return self.error_response(401)
        if request.match_info["version"] != self.version:
            return self.error_response(404)
        return None

    # list

    async def _list(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        try:
            params = self._parse_list_params(request.query.items())
        except ApiError as exc:
            return self._api_error(exc)
        total, page = self.query(**params)
        offset, limit = params["offset"], params["limit"]
        body = {
            "paging": {
                "total": total,
                "max": limit,
                "offset": offset,
                "previous": self._page_url(request, max(0, offset - limit)) if offset else None,
                "next": self._page_url(request, offset + limit) if offset + limit < total else None,
            },
            "data": page,
        }
        return self.json(body)

    @staticmethod
    def _page_url(request: web.Request, offset: int) -> str:
        """[inferred] `previous`/`next` are full URLs: the same query with another offset."""
        items = [(k, v) for k, v in request.query.items() if k != "offset"]
        items.append(("offset", str(offset)))
        return str(request.url.with_query(items))

    def _parse_list_params(self, items: Iterable[tuple[str, str]]) -> dict[str, Any]:
        """Validate like the real API: unknown names first, then values.

        [inferred] choices: a repeated parameter is `invalid_param_type`; a non-integer
        `max`/`offset` is `invalid_param_type`; `max` <= 0 means the default (Groovy's
        `max ?: 100`); a negative offset means 0; `sort` outside id/name/dateCreated/
        lastUpdated and `order` outside asc/desc (any case) are `invalid_param`; `name` is a
        case-insensitive substring, or a glob when it contains `*`.
        """
        items = list(items)
        unknown = [k for k, _ in items if k not in LIST_PARAMS]
        if unknown:
            raise _invalid_param(dict.fromkeys(unknown))
        values: dict[str, str] = {}
        for key, value in items:
            if key in values:
                raise _invalid_type(key)
            values[key] = value
        bounds: dict[str, list[int | None]] = {f: [None, None] for f in DATE_FIELDS}
        for key in DATE_PARAMS:
            if key not in values:
                continue
            seconds = parse_filter_date(values[key])
            if seconds is None:
                raise ApiError(
                    400,
                    "invalid_datetime_format",
                    f"Invalid datetime filter (not ISO-8601 formatted): [{values[key]}]",
                )
            field, op = key.rsplit("_", 1)
            low, high = bounds[field]
            if op in ("gt", "gte"):
                seconds += op == "gt"
                bounds[field][0] = seconds if low is None else max(low, seconds)
            else:
                seconds -= op == "lt"
                bounds[field][1] = seconds if high is None else min(high, seconds)
        limit = self._int_param(values, "max", self.default_max)
        if limit <= 0:
            limit = self.default_max
        limit = min(limit, self.max_page_size)
        offset = max(0, self._int_param(values, "offset", 0))
        sort = values.get("sort", "id")  # [inferred] default order: by id
        if sort not in SORT_FIELDS:
            raise _invalid_param(["sort"])
        order = values.get("order", "asc").lower()
        if order not in ("asc", "desc"):
            raise _invalid_param(["order"])
        return {
            "bounds": {f: (lo, hi) for f, (lo, hi) in bounds.items()},
            "name": values.get("name"),
            "sort": sort,
            "order": order,
            "offset": offset,
            "limit": limit,
        }

    @staticmethod
    def _int_param(values: dict[str, str], key: str, default: int) -> int:
        if key not in values:
            return default
        if not _INT_RE.fullmatch(values[key]):
            raise _invalid_type(key)
        return int(values[key])

    # show / create / update / delete

    def _lookup(self, request: web.Request) -> int:
        """The id addressed by `/{id}` or `/reference/{name}` (the name is the external id)."""
        if "name" in request.match_info:
            name = request.match_info["name"]
            authority_id = self._names.get(name)
            if authority_id is None:
                raise _not_found(name)
            return authority_id
        raw = request.match_info["id"]
        if not _INT_RE.fullmatch(raw):
            raise _invalid_type("id")
        if int(raw) not in self._records:
            raise _not_found(raw)
        return int(raw)

    async def _show(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        try:
            return self.json(self._records[self._lookup(request)])
        except ApiError as exc:
            return self._api_error(exc)

    async def _name_from_body(self, request: web.Request) -> str:
        """[inferred] a body that is not a JSON object counts as a missing name."""
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError:
            body = None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "missing_param", "name parameter is missing")
        if len(name) > 255:  # [inferred] a varchar(255) column
            raise ApiError(400, "save_failed", "Failed to save instance")
        return name

    async def _create(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        try:
            name = await self._name_from_body(request)
            if name in self._names:
                raise ApiError(400, "already_existing", "Authority is already existing.")
        except ApiError as exc:
            return self._api_error(exc)
        return self.json(self.insert(name), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        try:
            try:
                authority_id = self._lookup(request)
            except ApiError as exc:
                if exc.error == "not_found":
                    exc.status = self.update_not_found_status
                raise
            name = await self._name_from_body(request)
            if self._names.get(name, authority_id) != authority_id:
                # [inferred] a unique-constraint violation surfaces as save_failed.
                raise ApiError(400, "save_failed", "Failed to save instance")
        except ApiError as exc:
            return self._api_error(exc)
        record = self._records[authority_id]
        if name == record["name"]:
            # [inferred] Hibernate does not flush an unchanged entity: lastUpdated stays.
            return self.json(record)
        return self.json(self.update(authority_id, name))

    async def _delete(self, request: web.Request) -> web.Response:
        refused = self._guard(request)
        if refused is not None:
            return refused
        try:
            authority_id = self._lookup(request)
        except ApiError as exc:
            return self._api_error(exc)
        self.delete(authority_id)
        # "true" is a string in the documented body.
        return self.json({"success": "true", "success_description": DELETED_DESCRIPTION})


def _name_matcher(pattern: str) -> Callable[[str], bool]:
    """[inferred] `*` is a wildcard over the whole name; plain text matches a substring.
    Both ignore case."""
    if "*" in pattern:
        parts = (re.escape(p) for p in pattern.split("*"))
        regex = re.compile(".*".join(parts), re.IGNORECASE | re.DOTALL)
        return lambda name: regex.fullmatch(name) is not None
    needle = pattern.lower()
    return lambda name: needle in name.lower()


def _demo_changes(sim: ValomniaSimulator, rng: random.Random) -> str:
    for aid in rng.sample([a["id"] for a in sim.truth()], 10):
        sim.update(aid, name=f"Renamed role {aid}")
    for _ in range(3):
        sim.insert()
    return "10 authorities renamed, 3 added"


SANDBOX = SandboxSource(
    name="valomnia",
    make=lambda seed, sizes: ValomniaSimulator(authorities=sizes["authorities"], seed=seed),
    credentials=lambda sim: {"username": sim.username, "password": sim.password},
    sizes=(Size("authorities", 1200, "Valomnia authorities"),),
    port=8702,
    demo_changes=_demo_changes,
    small=lambda seed: ValomniaSimulator(authorities=45, seed=seed),
    streams={
        "authorities": SandboxStream(
            records=lambda sim: sim.truth(),
            removal=Removal(
                {"op": "delete", "id": "{id}"},
                marked_by="reconcile",
                why="a sync reads only what changed since the watermark (lastUpdated_gte) and "
                "the list carries no delete signal; a reconcile lists every id (SOURCES.md §4.4)",
            ),
        ),
    },
    faults=FaultTarget(
        stream="authorities",
        make=lambda seed: ValomniaSimulator(authorities=90, seed=seed),
        list_path="/api/v2.1/authorities",
        page_size=25,
        record=lambda sim, i: sim._records[sorted(sim._records)[i]],
    ),
)

__all__ = ["SANDBOX", "ValomniaSimulator", "format_s", "parse_filter_date"]
