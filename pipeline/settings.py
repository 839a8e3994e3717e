"""The settings every source and stream accepts in pipeline.toml, as validated models.

A source module extends them with its own keys (`AfostoSettings(SourceSettings)`); the
declarations (`pipeline.streams`) name their models, and `pipeline.config` validates a file
against them. Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StreamSettings(_Strict):
    """Per-stream settings; a stream may declare a subclass with extra options."""

    enabled: bool = True
    schedule: str = "0 2 * * *"
    lookback_seconds: int = Field(default=0, ge=0)
    page_size: int | None = Field(default=None, ge=1)

    reconcile_schedule: str | None = None

    # Guards against a source that pages forever (a `next_page` that never ends, ever-new
    # records): a run of the stream that asks for more list pages, or runs longer, fails and
    # says which. The defaults never bind a real run: a million pages is 25 million customers
    # at Soho's maximum of 25 a page, and a day outlasts any nightly slot. At most 30 days, so
    # `inf` cannot switch the guard off.
    max_pages: int = Field(default=1_000_000, ge=1)
    max_run_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)

    @field_validator("schedule", "reconcile_schedule")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        from pipeline.cron import cron_trigger

        if value is None:
            return value
        try:
            cron_trigger(value)
        except ValueError as exc:
            raise ValueError(f'not a cron expression like "0 2 * * *" ({exc})') from None
        return value


class ExecutionSettings(_Strict):
    """`[execution]`: where runs happen. `local` runs them in the process that asks (the CLI,
    the scheduler); `queue` defers them as jobs that `pipeline worker` processes run, on any
    machine reaching the database (`pipeline.queue`)."""

    backend: Literal["local", "queue"] = "local"
    # A worker writes its heartbeat this often; one silent for `stalled_after_seconds` is taken
    # for dead (killed, its machine gone) and its jobs are retried by the other workers.
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    stalled_after_seconds: float = Field(default=60.0, gt=0)

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

    base_url: str
    max_concurrency: int = Field(default=4, ge=1, le=64)
    requests_per_second: float | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    backoff_seconds: float = Field(default=0.5, ge=0)
    max_response_mb: float = Field(default=64.0, gt=0)
    verify_tls: bool = True
    streams: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
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
