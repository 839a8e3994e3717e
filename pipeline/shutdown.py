"""Stopping politely on SIGTERM / Ctrl-C.

The first signal sets `event`: streams finish the page they are writing, record `interrupted`
and return. If that takes longer than `grace` seconds, or a second signal comes, the main task
is cancelled (a transaction in flight then rolls back, which is still consistent).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

from pipeline.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


class StoppedBeforeStart(Exception):
    """A signal came while the command was still setting up: nothing ran, nothing to finish."""


class GracefulStop:
    def __init__(self, grace_seconds: float = 30.0) -> None:
        self.event = asyncio.Event()
        self.grace_seconds = grace_seconds
        self._task: asyncio.Task[object] | None = None

    def install(self) -> None:
        """Take over SIGTERM and SIGINT for the running loop's current task."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
                pass

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.event.is_set():
            log.warning("second_signal_cancelling", signal=name)
            self._cancel()
            return
        log.info("stopping", signal=name, grace_seconds=self.grace_seconds)
        self.event.set()
        asyncio.get_running_loop().call_later(self.grace_seconds, self._cancel)

    async def unless_stopped(self, step: Awaitable[T]) -> T:
        """A set-up step (connecting, checking the schema, cutting slices) that the first
        signal ends at once: nothing has run yet, so there is no page boundary to wait for."""
        task = asyncio.ensure_future(step)
        stopping = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise StoppedBeforeStart("stopped while setting up; nothing ran")

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
