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
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import orjson

from pipeline.errors import AuthenticationFailed
from pipeline.logs import get_logger

if TYPE_CHECKING:
    from pipeline.http import HttpClient

log = get_logger(__name__)


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


class FormLoginSession(Auth):
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
        self._login_url = login_url
        self._login_path = urlsplit(login_url).path
        self._form = dict(form)
        self._cookie_name = cookie_name
        self._session_id: str | None = None
        self._lock = asyncio.Lock()
        self.logins = 0

    async def headers(self, client: HttpClient) -> dict[str, str]:
        if self._session_id is None:
            async with self._lock:
                if self._session_id is None:
                    self._session_id = await self._login(client)
        return {"Cookie": f"{self._cookie_name}={self._session_id}"}

    async def refresh(self, client: HttpClient, used: Mapping[str, str]) -> bool:
        async with self._lock:
            current = f"{self._cookie_name}={self._session_id}"
            if used.get("Cookie") == current or self._session_id is None:
                log.info("session_expired_logging_in_again", source=client.source)
                self._session_id = await self._login(client)
        return True

    async def _login(self, client: HttpClient) -> str:
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
        self.logins += 1
        log.info("logged_in", source=client.source)
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
