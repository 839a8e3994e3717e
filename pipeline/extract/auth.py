"""How each source proves who we are.

An `Auth` gives the headers for one request and may be asked to refresh after a 401. Static
tokens cannot refresh; a session login can, once per failing request, so an expired session
mid-run costs one login instead of a failed stream.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable, Mapping
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import orjson

from pipeline.errors import AuthenticationFailed
from pipeline.logs import get_logger

log = get_logger(__name__)


class HttpClient(Protocol):
    """What an auth needs of the client it signs for (`pipeline.extract.http.HttpClient`):
    the source's name for messages, and single raw attempts for login exchanges."""

    source: str

    async def request_raw(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        allow_redirects: bool = False,
    ) -> tuple[int, Mapping[str, str], bytes, Any]: ...


class Auth:
    """Base: no credentials. Override `headers`, and `refresh` if the credential can expire."""

    async def headers(self, client: HttpClient) -> dict[str, str]:
        return {}

    async def refresh(self, client: HttpClient, used: Mapping[str, str]) -> bool:
        """Called after a 401; return True when a retry with fresh headers makes sense."""
        return False

    async def form_fields(self, client: HttpClient) -> dict[str, str]:
        """Fields added to every form the client posts (form-signed APIs)."""
        return {}


class HeaderToken(Auth):
    """A static token in a header: `Authorization: Bearer <t>`, `X-Auth-Token: <t>`, ..."""

    def __init__(self, token: str, header: str = "Authorization", prefix: str = "Bearer ") -> None:
        self._value = f"{prefix}{token}"
        self._header = header

    async def headers(self, client: HttpClient) -> dict[str, str]:
        return {self._header: self._value}


def bearer(token: str) -> HeaderToken:
    return HeaderToken(token, "Authorization", "Bearer ")


class RenewableCredential(Auth):
    """A credential obtained by a call (a login, a token exchange) and obtained again when the
    API answers 401 with it. Concurrent requests share one renewal."""

    def __init__(self) -> None:
        self._value: str | None = None
        self._lock = asyncio.Lock()
        self.logins = 0

    async def _obtain(self, client: HttpClient) -> str:
        raise NotImplementedError

    def _headers_for(self, value: str) -> dict[str, str]:
        raise NotImplementedError

    async def headers(self, client: HttpClient) -> dict[str, str]:
        if self._value is None:
            async with self._lock:
                if self._value is None:
                    self._value = await self._renew(client)
        return self._headers_for(self._value)

    async def refresh(self, client: HttpClient, used: Mapping[str, str]) -> bool:
        async with self._lock:
            if self._value is None or self._headers_for(self._value).items() <= used.items():
                log.info("credential_expired_renewing", source=client.source)
                self._value = await self._renew(client)
        return True

    async def _renew(self, client: HttpClient) -> str:
        value = await self._obtain(client)
        self.logins += 1
        log.info("logged_in", source=client.source)
        return value


class FormLoginSession(RenewableCredential):
    """Log in with a form, then send the session cookie; log in again when it expires.

    Used by Valomnia (Spring Security: POST j_spring_security_check, cookie JSESSIONID). The
    login answers either 200 with JSON or a 302 to a success page; both are accepted, and the
    cookie is read from the login response itself so no cookie jar is needed.
    """

    def __init__(
        self,
        login_url: str,
        form: Mapping[str, str],
        cookie_name: str = "JSESSIONID",
    ) -> None:
        super().__init__()
        self._login_url = login_url
        self._login_path = urlsplit(login_url).path
        self._form = dict(form)
        self._cookie_name = cookie_name

    def _headers_for(self, value: str) -> dict[str, str]:
        return {"Cookie": f"{self._cookie_name}={value}"}

    async def _obtain(self, client: HttpClient) -> str:
        status, headers, body, resp = await client.request_raw(
            "POST", self._login_url, data=self._form
        )
        session_id = _cookie_value(resp, self._cookie_name)
        if status in (301, 302, 303) and session_id:
            location = urljoin(self._login_url, headers.get("Location", ""))
            if "fail" in location.lower() or "denied" in location.lower():
                raise self._rejected(
                    client, status, f"login redirected to {urlsplit(location).path}"
                )
            if urlsplit(location).netloc != urlsplit(self._login_url).netloc:
                raise self._rejected(
                    client,
                    status,
                    "login redirected to another host; the session is not sent there",
                )
            # Confirm the session on the success page, as a browser would.
            status, _, body, _ = await client.request_raw(
                "GET", location, headers={"Cookie": f"{self._cookie_name}={session_id}"}
            )
        if status != 200:
            raise self._rejected(client, status, _short(body))
        payload = _json_or_none(body)
        if isinstance(payload, dict) and payload.get("success") is False:
            raise self._rejected(client, status, _short(body))
        if not session_id and isinstance(payload, dict) and payload.get("token"):
            session_id = str(payload["token"])
        if not session_id:
            raise self._rejected(client, status, "login answered without a session cookie")
        return session_id

    def _rejected(self, client: HttpClient, status: int, detail: str) -> AuthenticationFailed:
        return AuthenticationFailed(
            client.source,
            "POST",
            self._login_path,
            status,
            detail,
            "Check the source's username and password in pipeline.toml",
        )


def _cookie_value(resp: object, name: str) -> str | None:
    for header in getattr(resp, "headers", {}).getall("Set-Cookie", []):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if name in cookie and cookie[name].value:
            return cookie[name].value
    return None


def _json_or_none(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _short(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text[:200] or "(empty body)"


class TokenExchange(RenewableCredential):
    """Sparkfly [ext]: GET /auth with identity and key headers answers 204 with a token in the
    `X-Auth-Token` response header, valid 24 hours; it is sent back in that header."""

    def __init__(
        self, auth_url: str, identity: str, key: str, header: str = "X-Auth-Token"
    ) -> None:
        super().__init__()
        self._auth_url = auth_url
        self._identity = identity
        self._key = key
        self._header = header

    def _headers_for(self, value: str) -> dict[str, str]:
        return {self._header: value}

    async def _obtain(self, client: HttpClient) -> str:
        status, headers, body, _ = await client.request_raw(
            "GET",
            self._auth_url,
            headers={"X-Auth-Identity": self._identity, "X-Auth-Key": self._key},
        )
        token = headers.get(self._header)
        if status not in (200, 204) or not token:
            raise AuthenticationFailed(
                client.source,
                "GET",
                urlsplit(self._auth_url).path,
                status,
                _short(body) if body else f"no {self._header} header in the answer",
                "Check the source's identity and key in pipeline.toml",
            )
        return token


class SignedForm(Auth):
    """DigiLocker: every form carries `clientid`, a UNIX `ts`, and `hmac` = SHA-256 over
    (client secret + clientid + ts), recomputed for every request. The secret is used only as
    that digest's input; it is never sent or logged."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        encoding: str = "hex",
        ts_offset_seconds: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._encoding = encoding
        self._offset = ts_offset_seconds
        self._clock = clock

    def sign(self, ts: str) -> str:
        digest = hashlib.sha256((self._secret + self._client_id + ts).encode()).digest()
        return base64.b64encode(digest).decode() if self._encoding == "base64" else digest.hex()

    async def form_fields(self, client: HttpClient) -> dict[str, str]:
        ts = str(int(self._clock()) + self._offset)
        return {"clientid": self._client_id, "ts": ts, "hmac": self.sign(ts)}
