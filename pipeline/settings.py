"""The settings every source and stream accepts in pipeline.toml, as validated models.

A source module extends them with its own keys (`AfostoSettings(SourceSettings)`); the
declarations (`pipeline.streams`) name their models, and `pipeline.config` validates a file
against them. Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_MAX_STREAMS = 16
DEFAULT_MAX_DELETE_FRACTION = 0.5
# Bounds of the numeric settings. TOML takes `inf`, `nan`, 1e-300 and integers of any size, and
# each such value used to pass and then crash or hang a run (an OverflowError building the
# client, a rate limit waiting 1e300 s, a lookback overflowing datetime). The bounds are wide
# enough never to bind a real deployment; `pipeline.example.toml` states each one.
MAX_REQUESTS_PER_SECOND = 10_000.0
MIN_REQUESTS_PER_SECOND = 0.001  # one request every 17 minutes
MAX_TIMEOUT_SECONDS = 3_600.0
MAX_BACKOFF_SECONDS = 300.0  # the first retry's wait; waits are capped at 30 s anyway
MAX_RESPONSE_MB = 4_096.0  # a body is held in memory whole
MAX_RETRY_AFTER_SECONDS = 86_400.0  # a server asking for more than a day is down, not busy
MAX_PAGE_SIZE = 100_000
MAX_LOOKBACK_SECONDS = 10 * 365 * 86_400  # ten years, well inside datetime's range
MAX_BIGINT = 2**63 - 1  # ids sent to an API and compared in Postgres as bigint


class _Strict(BaseModel):
    # allow_inf_nan: `inf` and `nan` are valid TOML floats; no setting means either.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class StreamSettings(_Strict):
    """Per-stream settings; a stream may declare a subclass with extra options."""

    enabled: bool = True
    schedule: str = "0 2 * * *"
    lookback_seconds: int = Field(default=0, ge=0, le=MAX_LOOKBACK_SECONDS)
    page_size: int | None = Field(default=None, ge=1, le=MAX_PAGE_SIZE)
    # The most of a scope's live rows one run may mark deleted; beyond it the deletions are
    # held and the run ends `held` (`pipeline.load.guard`). 1 turns the guard off.
    max_delete_fraction: float = Field(default=DEFAULT_MAX_DELETE_FRACTION, gt=0, le=1)

    reconcile_schedule: str | None = None

    # Guards against a source that pages forever (a `next_page` that never ends, ever-new
    # records): a run of the stream that asks for more list pages, or runs longer, fails and
    # says which. The defaults never bind a real run: a million pages is 25 million customers
    # at Soho's maximum of 25 a page, and a day outlasts any nightly slot. At most 30 days, so
    # `inf` cannot switch the guard off.
    max_pages: int = Field(default=1_000_000, ge=1, le=100_000_000)
    max_run_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)

    @field_validator("schedule", "reconcile_schedule")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        from pipeline.cron import firing_trigger

        if value is None:
            return value
        try:
            firing_trigger(value)
        except ValueError as exc:
            raise ValueError(f'not a cron expression like "0 2 * * *" that fires ({exc})') from None
        return value


class ExecutionSettings(_Strict):
    """`[execution]`: where runs happen. `local` runs them in the process that asks (the CLI,
    the scheduler); `queue` defers them as jobs that `pipeline worker` processes run, on any
    machine reaching the database (`pipeline.queue`)."""

    backend: Literal["local", "queue"] = "local"
    # A worker writes its heartbeat this often; one silent for `stalled_after_seconds` is taken
    # for dead (killed, its machine gone) and its jobs are retried by the other workers.
    heartbeat_seconds: float = Field(default=10.0, ge=0.1, le=3_600.0)
    stalled_after_seconds: float = Field(default=60.0, ge=1.0, le=86_400.0)
    # Streams one process runs at once (local backend: `sync`, `schedule`, backfill slices);
    # beyond it they wait their turn. Each holds a database connection, and the pool is sized
    # from this (`pipeline.run.slots`), so it must fit the server's `max_connections`.
    max_streams: int = Field(default=DEFAULT_MAX_STREAMS, ge=1, le=256)

    @model_validator(mode="after")
    def _stall_outlasts_heartbeats(self) -> ExecutionSettings:
        if self.stalled_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "stalled_after_seconds must be at least twice heartbeat_seconds, or a live "
                "worker whose heartbeat is late once would have its jobs taken away"
            )
        return self


class SourceSettings(_Strict):
    """Connection settings every source has; subclasses add the source's credentials."""

    # What tells one account of the API from another, besides the API root: two instances
    # equal in both read the same records, and every row would be stored twice under two
    # `_source` values (`pipeline.config` refuses them). Empty: the source's secrets.
    account_keys: ClassVar[tuple[str, ...]] = ()

    base_url: str
    max_concurrency: int = Field(default=4, ge=1, le=64)
    requests_per_second: float | None = Field(
        default=None, ge=MIN_REQUESTS_PER_SECOND, le=MAX_REQUESTS_PER_SECOND
    )
    timeout_seconds: float = Field(default=30.0, ge=0.1, le=MAX_TIMEOUT_SECONDS)
    max_retries: int = Field(default=5, ge=0, le=20)
    backoff_seconds: float = Field(default=0.5, ge=0, le=MAX_BACKOFF_SECONDS)
    max_response_mb: float = Field(default=64.0, ge=0.01, le=MAX_RESPONSE_MB)
    # A Retry-After asking for longer fails the run at once instead of being waited out.
    max_retry_after_seconds: float = Field(default=300.0, ge=0, le=MAX_RETRY_AFTER_SECONDS)
    verify_tls: bool = True
    streams: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if trick := url_trick(value):
            raise ValueError(trick)
        try:
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError:
            raise ValueError("has an invalid port; use a number from 1 to 65535") from None
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; put them in the source's own keys")
        if parts.query or parts.fragment:
            raise ValueError("must not contain a query string or fragment")
        return value.rstrip("/")

    def secret_values(self) -> list[str]:
        """Every secret this source holds, for the log redactor."""
        return [
            value.get_secret_value()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        ]

    def account(self) -> tuple[tuple[str, Any], ...]:
        """The values of `account_keys` (secrets unwrapped): compare, never print."""
        keys = self.account_keys or tuple(
            name for name in type(self).model_fields if isinstance(getattr(self, name), SecretStr)
        )
        values = ((key, getattr(self, key)) for key in keys)
        return tuple(
            (key, value.get_secret_value() if isinstance(value, SecretStr) else value)
            for key, value in values
        )


_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)


def url_trick(url: str) -> str | None:
    """What makes `url` point somewhere other than it reads, if anything: a `..` segment (the
    client resolves it, so `/api/../admin` is `/admin`), a dot hidden as `%2e`, a backslash
    (a slash to browsers and some proxies, refused by the client only at the first request),
    a space or a control character (CR/LF would split a request line; the URL parser drops
    tabs and newlines silently). None for an ordinary URL."""
    if "\\" in url:
        return "must not contain a backslash; use / between path segments"
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return (
            "must not contain a space or control character (line break, tab, NUL); "
            "percent-encode a space in a path as %20"
        )
    path = urlsplit(url).path
    if _ENCODED_DOT.search(path):
        return "must not contain a percent-encoded dot (%2e); write the path plainly"
    if _DOT_SEGMENT.search(path):
        return "must not contain a '.' or '..' segment; write the API root's path as it is"
    if _DOT_SEGMENT.search(unquote(path)):
        return "must not contain a '.' or '..' segment, encoded or not"
    return None
