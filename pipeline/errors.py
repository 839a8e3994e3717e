"""The errors a person sees, classified once.

Every error that can end a stream carries enough to act on: which source and stream, what
happened, and what to do next. Messages never contain secrets: callers pass paths, not URLs
with credentials, and the logging redactor is the second line of defence.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base for errors whose message is meant for a person, not a traceback."""


class ConfigError(PipelineError):
    """The configuration cannot be used. The CLI exits with code 2 before any work starts."""


class SourceHttpError(PipelineError):
    """A response the client will not retry (or stopped retrying).

    The runner reports it prefixed with the stream's name.
    """

    def __init__(
        self,
        source: str,
        method: str,
        path: str,
        status: int | None,
        detail: str,
        fix: str,
        attempts: int = 1,
    ) -> None:
        self.source = source
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.fix = fix
        self.attempts = attempts
        status_text = f"HTTP {status}" if status is not None else "no response"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} {path} failed{tries}: {status_text}: {detail}. {fix}")


class AuthenticationFailed(SourceHttpError):
    """401/403: retrying cannot help; the credentials or their scopes must change."""


class NotFound(SourceHttpError):
    """404: for a list endpoint a misconfiguration, for a detail endpoint a deletion signal."""


class RetriesExhausted(SourceHttpError):
    """Every attempt within the retry budget failed with a retriable error."""


class RetryAfterTooLong(SourceHttpError):
    """A 429/503 asked for a longer wait than the source's `max_retry_after_seconds`: waiting
    it out in silence would look like a hang, and the run could not finish in time anyway."""


class BadRequest(SourceHttpError):
    """4xx other than auth/404/429: the request we built is wrong; a bug or a config error."""


class PaginationError(PipelineError):
    """The source does not page as declared (a repeated page, an ignored parameter, an unsorted
    page where sorting was asked): continuing could loop forever or skip records."""


class Interrupted(PipelineError):
    """A stop was asked for (SIGTERM, Ctrl-C): the stream ended at a page boundary."""


class ListEndedEarly(PaginationError):
    """A list's records ended well before the page count it claimed (a total of 10**9 with
    records on page 1): the walk stopped on the empty pages instead of asking for the rest.

    Raised after every page read was yielded. The pages not asked for were not read, so the
    list is not known complete: a reader that settles absences must not, and one that only
    loads what it read may catch this and go on."""

    def __init__(self, claimed_pages: int, records_end: int, empty_pages: int) -> None:
        self.claimed_pages = claimed_pages
        self.records_end = records_end
        self.empty_pages = empty_pages
        super().__init__(
            f"the API claimed {claimed_pages:,} pages, but records ended at page {records_end:,} "
            f"and {empty_pages} pages after it came back empty; the rest were not asked for, "
            "so the list is not known complete"
        )


class RunLimitExceeded(PipelineError):
    """A run of a stream went past its `max_pages` or `max_run_seconds`: the source may be
    paging endlessly or hanging. What was committed before stands."""
