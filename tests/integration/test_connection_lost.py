"""A stream whose database session is ended mid-run (a failover, an administrator's
`pg_terminate_backend`): a database error said as such, status shows the run interrupted at
once, and the next run recovers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline import db
from pipeline.cli import main
from pipeline.sandbox import RunningSimulator
from tests.helpers import make_settings, scalar, sync

# The session of the run holding the stream's advisory lock (see `pipeline.run.stream_run`), and its state.
_LOCK_HOLDER = """
SELECT a.pid, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint)
      = hashtextextended('pipeline.stream:' || $1, 0)
"""


class HangUpHolder:
    """A TCP relay in front of Postgres that passes every byte both ways but passes the server's
    hang-up on only when the client hangs up too (or after `hold` seconds).

    A session ended by the server sends its last message (FATAL 57P01) and closes; a client
    that acts between reading the message and noticing the close meets a connection it still
    believes open, in an error state: asyncpg's `InternalClientError: cannot switch to state
    ...`. That window is a moment wide in production; held open here, every run meets it."""

    def __init__(self, database_url: str, hold: float = 10.0) -> None:
        parts = urlsplit(database_url)
        self.host = parts.hostname or parse_qs(parts.query)["host"][0]
        self.port = parts.port or 5432
        self.hold = hold
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        done: asyncio.Event,
        other_done: asyncio.Event | None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        done.set()
        if other_done is not None:  # the server hung up: hold the client's side open
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(other_done.wait(), self.hold)
        writer.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):  # the embedded server's socket folder
            path = f"{self.host}/.s.PGSQL.{self.port}"
            server_r, server_w = await asyncio.open_unix_connection(path)
        else:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
        client_gone, server_gone = asyncio.Event(), asyncio.Event()
        await asyncio.gather(
            self._pipe(client_r, server_w, client_gone, None),
            self._pipe(server_r, client_w, server_gone, client_gone),
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{netloc}127.0.0.1:{port}", parts.path, "", ""))


def _config(path: Path, soho: RunningSimulator) -> Path:
    path.write_text(
        f'[sources.soho]\nbase_url = "{soho.url}/api/v1"\ntoken = "{soho.sim.token}"\n',  # type: ignore[attr-defined]
        encoding="utf-8",
    )
    return path


async def test_a_session_ended_mid_run_is_a_database_error_and_status_says_interrupted_at_once(
    engine: AsyncEngine,
    database_url: str,
    soho: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    config = _config(tmp_path / "pipeline.toml", soho)
    settings = make_settings(soho, soho_extra={"max_concurrency": 1})
    observer = await asyncpg.connect(db.plain_url(database_url))
    requests = 0
    while_paused: list[str] = []

    async def end_the_session_while_paused(sim: Any, request: Any) -> None:
        """Page 3 waits here; the stream's session, idle between pages, is ended meanwhile."""
        nonlocal requests
        requests += 1
        if requests != 3:
            return
        for _ in range(200):
            holder = await observer.fetchrow(_LOCK_HOLDER, "soho.customers")
            if holder is not None and holder["state"] == "idle":
                break
            await asyncio.sleep(0.02)
        assert holder is not None, "the run holds no lock"
        await asyncio.to_thread(main, ["--config", str(config), "status", "--json"])
        while_paused.append(capsys.readouterr().out)
        await observer.execute("SELECT pg_terminate_backend($1)", holder["pid"])
        for _ in range(200):
            gone = not await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", holder["pid"]
            )
            if gone:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the server's FATAL message reaches the client

    soho.sim.on_request(end_the_session_while_paused)  # type: ignore[attr-defined]
    try:
        async with HangUpHolder(database_url).serving() as port:
            relayed = db.create_engine(_via(database_url, port))
            try:
                outcome = (await sync(relayed, settings))["soho.customers"]
            finally:
                await relayed.dispose()
    finally:
        await observer.close()

    # A live run is `running`: its lock is held.
    [paused] = [s for s in json.loads(while_paused[0]) if s["key"] == "soho.customers"]
    assert paused["last_run_status"] == "running", paused

    assert outcome.status == "failed"
    error = outcome.error or ""
    assert "database error" in error and "connection to Postgres was lost" in error, error
    assert "internal error" not in error and "please report" not in error, error
    assert "InternalClientError" in error  # the reported case: the relay makes it every time
    assert "run the stream again" in error

    # Its end could not be written; status says at once what became of it, and writes nothing.
    assert await scalar(engine, "SELECT status FROM pipeline.sync_runs") == "running"
    status = ["--config", str(config), "status"]
    assert await asyncio.to_thread(main, [*status, "--json"]) == 1  # stale: never succeeded
    [report] = [s for s in json.loads(capsys.readouterr().out) if s["key"] == "soho.customers"]
    assert report["last_run_status"] == "interrupted", report
    assert "lost its database connection" in report["last_error"]
    assert await asyncio.to_thread(main, status) == 1
    text = capsys.readouterr().out
    assert "interrupted" in text and "lost its database connection" in text
    assert await scalar(engine, "SELECT status FROM pipeline.sync_runs") == "running"

    # The next run recovers, and records the abandoned run as interrupted.
    again = (await sync(engine, make_settings(soho)))["soho.customers"]
    assert again.status == "succeeded" and again.error is None
    assert await scalar(engine, "SELECT count(*) FROM soho.customers") == 120
    statuses = await scalar(
        engine, "SELECT string_agg(status, ',' ORDER BY id) FROM pipeline.sync_runs"
    )
    assert statuses == "interrupted,succeeded"
