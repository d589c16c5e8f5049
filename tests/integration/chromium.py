"""Headless Chromium (Debian's package) driven over the DevTools protocol with aiohttp websockets."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["Browser", "BrowserPage", "chromium_binary"]

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a port and writes it to DevToolsActivePort
]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("chromium not found: `make deps` (apt-get install chromium)")


class BrowserPage:
    """One tab, attached with a flat session on the browser's DevTools connection."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session_id=self.session_id, **params)

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression!r} raised in the page: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, within: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + within
        while True:
            try:  # the page may still be loading: an error counts as "not yet"
                value = await self.evaluate(expression)
            except AssertionError as exc:
                value = exc
            if value and not isinstance(value, AssertionError):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} stayed falsy for {within} s (last {value!r})")
            await asyncio.sleep(0.25)

    async def screenshot(self, path: Path) -> Path:
        reply = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return _write(path, base64.b64decode(reply["data"]))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class Browser:
    """A headless Chromium process with a new, empty profile; use as ``async with``."""

    def __init__(self, profile_dir: Path, log_path: Path) -> None:
        self.profile_dir = profile_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [chromium_binary(), *_FLAGS, f"--user-data-dir={self.profile_dir}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def _devtools_address(self) -> str | None:
        """``port`` and browser path Chromium wrote to the profile, once it listens."""
        active_port = self.profile_dir / "DevToolsActivePort"
        lines = active_port.read_text().splitlines() if active_port.exists() else []
        return f"ws://127.0.0.1:{lines[0]}{lines[1]}" if len(lines) >= 2 else None

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    async def __aenter__(self) -> Browser:
        self.proc = self._spawn()
        deadline = time.monotonic() + 30
        address = self._devtools_address()
        while address is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not start:\n{self.log_path.read_text(errors='replace')}")
            await asyncio.sleep(0.1)
            address = self._devtools_address()
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(address, max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._stop()

    async def send(self, method: str, session_id: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (events in between are dropped)."""
        assert self._ws is not None
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._ws.send_json(message)
        while True:
            reply = await asyncio.wait_for(self._ws.receive_json(), timeout=30)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise AssertionError(f"{method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    async def open(self, url: str) -> BrowserPage:
        """A new tab showing ``url``."""
        target = await self.send("Target.createTarget", url=url)
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = BrowserPage(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page
