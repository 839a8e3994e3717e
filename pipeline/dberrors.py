"""Database errors told as sentences: what the server said, which setting to fix, what to do.

asyncpg raises them with a SQLSTATE; when SQLAlchemy opened the connection it wraps them
(`DBAPIError.orig`, whose `__cause__` is asyncpg's error). Both shapes are classified here, once:
at connect time for the CLI (one line naming DATABASE_URL or `[database] url`, exit 2) and mid-run
for the runner (a lost connection is the database's doing, not a bug to report). Messages name
the host, port, user and database, never the password.
"""

from __future__ import annotations

import re
import socket
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import sqlalchemy as sa

# What a database call can raise besides a bug: the server's errors, the driver's (asyncpg's
# protocol gives InternalClientError when the server hung up between two statements), the
# socket's, and SQLAlchemy's wrappers of all of them.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    sa.exc.DBAPIError,
    OSError,
)
_DRIVER = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

# Server answers that end a session from the server's side: administrator, crash, dropped database.
_SESSION_ENDED = {"57P01", "57P02", "57P04"}


class ConnectFailed(ConnectionError):
    """The server could not be reached or refused the connection; `error` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def driver_error(exc: BaseException) -> BaseException:
    """The asyncpg (or socket) error inside `exc`, found through SQLAlchemy's `.orig` and the
    `__cause__`/`__context__` chain; `exc` itself when there is none."""
    queue, seen = [exc], set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _DRIVER):
            return current
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                queue.append(inner)
    return exc


def sqlstate(exc: BaseException) -> str | None:
    state = getattr(driver_error(exc), "sqlstate", None)
    return state if isinstance(state, str) else None


def is_database_error(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_ERRORS) or isinstance(driver_error(exc), _DRIVER)


def connection_lost(exc: BaseException) -> bool:
    """Whether the session died under us (failover, restart, `pg_terminate_backend`, network)."""
    error = driver_error(exc)
    state = sqlstate(error) or ""
    return (
        state in _SESSION_ENDED
        or state.startswith("08")
        or isinstance(error, (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError))
    )


def may_pass(exc: BaseException) -> bool:
    """Whether waiting can cure a failed connect: a server not up (yet), or starting up or in
    recovery (57P03). A missing database or role, a wrong password, a full server: no."""
    state = sqlstate(exc)
    if state is not None:
        return state == "57P03" or state.startswith("08")
    return isinstance(driver_error(exc), (OSError, asyncpg.InterfaceError))


# The server's words for a refused object ("permission denied for table sync_runs"), and the
# privilege reading that kind of object takes.
_DENIED = re.compile(
    r"permission denied for (table|view|materialized view|relation|sequence|schema|database|function) (\S+)"
)
_READ_PRIVILEGE = {"schema": "USAGE", "database": "CONNECT", "function": "EXECUTE"}


def read_privilege_denied(exc: BaseException) -> str | None:
    """What a reader lacks when the server refused it (SQLSTATE 42501, asyncpg's
    InsufficientPrivilegeError): "SELECT on table sync_runs", "USAGE on schema pipeline"; the
    server's own words when it names no object; None for any other error. For read-only
    clients (the dashboard): a table refused is told as its SELECT."""
    if sqlstate(exc) != "42501":
        return None
    said = str(driver_error(exc)).strip().splitlines()[0] if str(driver_error(exc)) else ""
    found = _DENIED.search(said)
    if found is None:
        return said or "a privilege the server did not name"
    kind, name = found.groups()
    kind = "table" if kind == "relation" else kind
    return f"{_READ_PRIVILEGE.get(kind, 'SELECT')} on {kind} {name}"


def refused(exc: BaseException) -> str | None:
    """What the server refused this login, as words: a missing privilege (42501: "no right on
    table pipeline.sync_runs (the server says: ...)") or a read-only session (25006); None for
    any other error."""
    state = sqlstate(exc)
    said = _detail(driver_error(exc))
    if state == "25006":
        return f"the session is read-only ({said})"
    if state != "42501":
        return None
    found = _DENIED.search(said)
    if found is None:
        return f"a privilege is missing ({said})"
    kind, name = found.groups()
    kind = "table" if kind == "relation" else kind
    return f"this login has no right on {kind} {name} it needs ({said})"


def _detail(error: BaseException) -> str:
    """The server's own words when it answered; the client's error, named, otherwise."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    # PostgresConnectionError is what the client raises for a dead socket, not an answer.
    answered = isinstance(error, asyncpg.PostgresError) and not isinstance(
        error, asyncpg.PostgresConnectionError
    )
    if answered and text:
        return f"the server says: {text}"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe(exc: BaseException) -> str:
    """A database error met while running a stream, as a sentence starting 'database error'."""
    error = driver_error(exc)
    state = sqlstate(error)
    if isinstance(error, (ConnectionRefusedError, socket.gaierror)):  # no session to lose
        return (
            f"database error: cannot reach the database server ({_detail(error)}); "
            "run the stream again once it answers"
        )
    if connection_lost(error):
        return (
            f"database error: the connection to Postgres was lost mid-run ({_detail(error)}); "
            "a restart, a failover or an administrator ended it. What was committed stands: "
            "run the stream again once the database answers"
        )
    if state == "53300":
        return (
            f"database error: the server has no connection left ({_detail(error)}); raise its "
            "max_connections (or the role's CONNECTION LIMIT) or lower [execution] max_streams "
            "in pipeline.toml: each running stream holds one connection"
        )
    if state == "57P03":
        return (
            f"database error: the server does not accept connections now ({_detail(error)}); "
            "it is starting up, shutting down or in recovery: run again when it is up"
        )
    if (refusal := refused(error)) is not None:
        return (
            f"database error: {refusal}; run the pipeline as the role that ran `pipeline db "
            "upgrade` (it owns every table), or grant this login as much"
        )
    return f"database error: {type(error).__name__}: {error}"


class _Target:
    """The parts of a database URL a message may show (no password)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or [""])[0]
        self.host = host or "localhost"
        self.port = str(parts.port or (query.get("port") or ["5432"])[0])
        self.user = unquote(parts.username or "") or (query.get("user") or [""])[0] or "postgres"
        self.database = unquote(parts.path.lstrip("/")) or self.user
        shown = f"[{self.host}]" if ":" in self.host else self.host  # IPv6
        self.where = self.host if self.host.startswith("/") else f"{shown}:{self.port}"
        self.server = f"-h {self.host} -p {self.port}"  # for createdb / createuser


def connect_message(exc: BaseException, setting: str, url: str) -> str:
    """Why connecting with `url` (supplied by `setting`) failed, and what to do, in one line."""
    error = driver_error(exc)
    state = sqlstate(error)
    t = _Target(url)
    said = _detail(error)
    if state == "3D000":
        return (
            f'{setting}: database "{t.database}" does not exist on {t.where}; create it '
            f"(createdb {t.server} -O {t.user} {t.database}) or name an existing database in "
            f"{setting}"
        )
    if state == "28P01":
        return (
            f'{setting}: the server rejected the password of role "{t.user}" on {t.where} '
            f"({said}); correct the password in {setting}"
        )
    if state is not None and state.startswith("28"):
        return (
            f'{setting}: the server refused role "{t.user}" on {t.where} ({said}); create the '
            f"role (createuser {t.server} --login --pwprompt {t.user}) or correct the "
            f"user in {setting}; if the role exists, let it in through the server's pg_hba.conf"
        )
    if state == "53300":
        return (
            f"{setting}: the server on {t.where} has no connection left for role "
            f'"{t.user}" ({said}); raise its max_connections (or the role\'s CONNECTION LIMIT) '
            "or stop idle clients: pipeline holds one connection per stream it runs at once "
            "([execution] max_streams)"
        )
    if state == "57P03":
        return (
            f"{setting}: the server on {t.where} does not accept connections now ({said}); it is "
            "starting up, shutting down or in recovery: try again when it is up"
        )
    if state == "42501":
        return (
            f'{setting}: role "{t.user}" may not connect to database "{t.database}" on '
            f'{t.where} ({said}); GRANT CONNECT ON DATABASE "{t.database}" TO "{t.user}"'
        )
    if may_pass(error):
        embedded = ", or unset DATABASE_URL and [database] url to use the embedded Postgres"
        if setting.startswith("the embedded"):
            embedded = ""
        return (
            f"{setting}: cannot reach the database at {t.where} ({type(error).__name__}); "
            f"check {setting} and that the server runs{embedded}"
        )
    return f"{setting}: cannot connect to the database on {t.where} ({said}); check {setting}"
