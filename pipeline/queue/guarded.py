"""procrastinate's worker, minus what any database login could make it do.

`LISTEN`/`NOTIFY` needs no privilege: any role that can connect may send a payload on the
queue's channel. procrastinate's own worker believes them: an `abort_job_requested` payload
cancels the named job (job ids are sequential, so every running job is one guess away), and a
payload that is not JSON (or lacks a key) ends its listener, which stops the whole worker. Here
a notification is only a hint:

- `job_inserted` wakes the fetch loop early, as before (a fetch of a job that does not exist
  finds nothing, so a forged one costs one query);
- `abort_job_requested` wakes the abort check early; the check reads the job table, where only
  a role that may update it can set `abort_requested` (revision 0008 records who did, in
  `pipeline.job_aborts`), and it runs at most every `ABORT_CHECK_MIN_SECONDS`, so a flood of
  hints costs a bounded number of queries;
- anything else is counted and reported in one warning line per `IGNORED_REPORT_SECONDS`, so a
  neighbour's noise is visible, never fatal and never one log line per payload.

Pinned to procrastinate 3.10 (`pyproject.toml`): the hooks overridden here are that release's
(`_start_side_tasks`, `_handle_notification`, `_poll_jobs_to_abort`), held by
`tests/redteam/test_queue_neighbours.py`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

from procrastinate import worker as procrastinate_worker
from procrastinate.manager import get_channel_for_queues

from pipeline.logs import get_logger
from pipeline.text import printable

log = get_logger(__name__)

ABORT_CHECK_MIN_SECONDS = 0.5
IGNORED_REPORT_SECONDS = 60.0
# An abort check also runs this often with no hint at all (procrastinate's default is 5 s).
ABORT_POLL_SECONDS = 5.0

_WHO = (
    "SELECT job_id, requested_by, application_name, host(client_addr) AS client_addr, "
    "backend_pid, requested_at FROM pipeline.job_aborts WHERE job_id = ANY(%(ids)s)"
)


def hint_of(payload: str) -> str | None:
    """The kind of a queue notification, or None when it is not one procrastinate sends."""
    if len(payload) > 1000:
        return None
    try:
        notification = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(notification, dict):
        return None
    kind = notification.get("type")
    if kind == "job_inserted":
        return kind
    if kind == "abort_job_requested" and type(notification.get("job_id")) is int:
        return kind
    return None


def describe_abort(row: MutableMapping[str, Any]) -> str:
    """Who stopped a run, as its `sync_runs` error says it."""
    where = [f"application {row['application_name']!r}"] if row.get("application_name") else []
    if row.get("client_addr"):
        where.append(f"from {row['client_addr']}")
    if row.get("backend_pid"):
        where.append(f"backend pid {row['backend_pid']}")
    at = row["requested_at"].isoformat(timespec="seconds") if row.get("requested_at") else "?"
    return printable(
        f"aborted on request: abort_requested was set on queue job {row['job_id']} by role "
        f"{row['requested_by']!r}" + (f" ({', '.join(where)})" if where else "") + f" at {at}"
    )


class GuardedWorker(procrastinate_worker.Worker):
    """A worker that acts only on what the job table says (see the module).

    `aborts`: filled with a description of who asked, by job id, before a job is cancelled on
    request, for the job to write into its run's history."""

    def __init__(self, *, aborts: MutableMapping[int, str], **options: Any) -> None:
        options.setdefault("abort_job_polling_interval", ABORT_POLL_SECONDS)
        super().__init__(**options)
        self.aborts = aborts
        self._abort_hint = asyncio.Event()
        self._ignored = 0
        self._ignored_reported_at: float | None = None

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        listen, self.listen_notify = self.listen_notify, False
        try:
            tasks: list[asyncio.Task[Any]] = super()._start_side_tasks()
        finally:
            self.listen_notify = listen
        if listen:
            tasks.append(asyncio.create_task(self._listen(), name="listener"))
        return tasks

    async def _listen(self) -> None:
        channels: Iterable[str] = get_channel_for_queues(queues=self.queues)
        await self.app.connector.listen_notify(on_notification=self._hinted, channels=channels)

    async def _hinted(self, *, channel: str, payload: str) -> None:
        kind = hint_of(payload)
        if kind == "job_inserted":
            self._new_job_event.set()
        elif kind == "abort_job_requested":
            self._abort_hint.set()
        else:
            self._note_ignored()

    async def _handle_notification(self, *, channel: str, notification: Any) -> None:
        """Not reached (`_listen` replaces the listener); kept safe should a release call it."""
        await self._hinted(channel=channel, payload=json.dumps(notification))

    def _note_ignored(self) -> None:
        """The first at once, then a count at most every `IGNORED_REPORT_SECONDS`."""
        self._ignored += 1
        now = time.monotonic()
        last = self._ignored_reported_at
        if last is None or now - last >= IGNORED_REPORT_SECONDS:
            log.warning(
                "queue_notifications_ignored",
                count=self._ignored,
                reason="payloads on the queue's channel that procrastinate does not send: "
                "some database session is sending them (LISTEN/NOTIFY needs no privilege)",
            )
            self._ignored, self._ignored_reported_at = 0, now

    async def _poll_jobs_to_abort(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._abort_hint.wait(), self.abort_job_polling_interval)
            except TimeoutError:
                pass
            self._abort_hint.clear()
            if self._running_jobs:
                try:
                    await self._abort_recorded()
                except Exception as exc:  # the database is away: the worker loop notices too
                    log.warning("abort_check_failed", error=str(exc))
            await asyncio.sleep(ABORT_CHECK_MIN_SECONDS)

    async def _abort_recorded(self) -> None:
        """Cancel the running jobs whose row says `abort_requested`, naming who set it."""
        ids = [int(i) for i in await self.app.job_manager.list_jobs_to_abort_async()]
        running = {c.job.id for c in self._running_jobs.values()} - set(self._job_ids_to_abort)
        wanted = [i for i in ids if i in running]
        if not wanted:
            return
        rows = await self.app.connector.execute_query_all_async(_WHO, ids=wanted)
        for row in rows:
            self.aborts[int(row["job_id"])] = describe_abort(row)
        for job_id in wanted:
            self.aborts.setdefault(
                job_id, f"aborted on request: abort_requested was set on queue job {job_id}"
            )
            log.warning("job_abort_requested", job_id=job_id, by=self.aborts[job_id])
        self._handle_abort_jobs_requested(wanted)


__all__ = ["GuardedWorker", "describe_abort", "hint_of"]
