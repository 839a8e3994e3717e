"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol with
aiohttp's WebSocket client: load a page as a person's browser would, collect everything that
went wrong on the way, and take a screenshot. No driver library and no browser download: the
protocol's Page, Runtime, Log and Network domains are all a page check needs.

What counts as wrong: an uncaught exception, a console error (CSP violations and resources
that failed to load are reported there too), a request that failed or was blocked, and any
response with an HTTP status of 400 or more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    url: str
    status: int | None = None
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    html: str = ""  # the DOM once loaded
    screenshot: bytes = b""


class Browser:
    """`async with Browser() as browser: load = await browser.load(url)`; each load is a new
    tab of the same browser, so cookies (a token's) carry over from one load to the next."""

    def __init__(self, executable: str | None = None, timeout: float = 20.0) -> None:
        found = executable or find_chromium()
        if found is None:
            raise RuntimeError("no chromium found; install it: apt-get install -y chromium")
        self.executable = found
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)

    async def __aenter__(self) -> Browser:
        self._profile = tempfile.TemporaryDirectory(prefix="pipeline-chromium-")
        self._process = await asyncio.create_subprocess_exec(
            self.executable,
            "--headless=new",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            endpoint = await asyncio.wait_for(self._endpoint(), self.timeout)
            self._http = aiohttp.ClientSession()
            self._ws = await self._http.ws_connect(endpoint, max_msg_size=0)
        except BaseException:
            await self._stop()
            raise
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()
        await self._http.close()
        await self._stop()

    async def _endpoint(self) -> str:
        assert self._process.stderr is not None
        seen = []
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace")
            seen.append(text)
            if match := LISTENING.search(text):
                self._drain = asyncio.create_task(self._process.stderr.read())
                return match.group(1)
        raise RuntimeError("chromium exited before listening: " + "".join(seen)[-2000:])

    async def _stop(self) -> None:
        if self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._profile.cleanup()

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and (future := self._pending.pop(data["id"], None)):
                if "error" in data:
                    future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
            elif "method" in data:
                self._events[data.get("sessionId", "")].put_nowait(data)

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, self.timeout)

    async def load(self, url: str, width: int = 1280, height: int = 860) -> PageLoad:
        """Open `url` in a new tab, wait for its load event, screenshot the whole page."""
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        events = self._events[session]
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await self.send(f"{domain}.enable", session=session)
            await self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            result = PageLoad(url)
            navigated = await self.send("Page.navigate", {"url": url}, session=session)
            if navigated.get("errorText"):
                result.problems.append(f"navigation failed: {navigated['errorText']}")
                return result
            await self._until_loaded(events, result)
            dom = await self.send(
                "Runtime.evaluate",
                {"expression": "document.documentElement.outerHTML", "returnByValue": True},
                session=session,
            )
            result.html = dom["result"]["value"]
            size = (await self.send("Page.getLayoutMetrics", session=session))["cssContentSize"]
            shot = await self.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": width,
                        "height": min(max(size["height"], height), 6000),
                        "scale": 1,
                    },
                },
                session=session,
            )
            result.screenshot = base64.b64decode(shot["data"])
            self._take(events, result)  # whatever arrived while the screenshot was taken
            return result
        finally:
            await self.send("Target.closeTarget", {"targetId": target})
            self._events.pop(session, None)

    async def _until_loaded(self, events: asyncio.Queue[dict[str, Any]], out: PageLoad) -> None:
        async with asyncio.timeout(self.timeout):
            while True:
                event = await events.get()
                if event["method"] == "Page.loadEventFired":
                    break
                self._note(event, out)
        await asyncio.sleep(0.2)  # late console messages of the load
        self._take(events, out)

    def _take(self, events: asyncio.Queue[dict[str, Any]], out: PageLoad) -> None:
        while not events.empty():
            self._note(events.get_nowait(), out)

    def _note(self, event: dict[str, Any], out: PageLoad) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            out.requests.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            response = params["response"]
            if params.get("type") == "Document" and out.status is None:
                out.status = response["status"]
            if response["status"] >= 400:
                out.problems.append(f"HTTP {response['status']} for {response['url']}")
        elif method == "Network.loadingFailed":
            reason = params.get("blockedReason") or params.get("errorText")
            out.problems.append(f"request failed ({reason}): {params.get('type')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            out.problems.append(f"uncaught exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            out.problems.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            out.problems.append(f"console error ({entry['source']}): {entry['text']}")


def save(load: PageLoad, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(load.screenshot)
    return path
