"""A real headless Chromium (Debian's ``chromium``), driven over the DevTools protocol with
aiohttp's websocket client: navigate, evaluate JavaScript, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp


class Chromium:
    def __init__(self, profile: Path, width: int = 1360, height: int = 900) -> None:
        self.profile = profile
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        self._ws: Any = None

    async def __aenter__(self) -> Chromium:
        binary = shutil.which("chromium")
        assert binary, "chromium is installed by deploy/test.sh (apt-get install chromium)"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(self.profile / "chromium.log", "wb"),  # noqa: SIM115
        )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            assert self.proc.poll() is None, (self.profile / "chromium.log").read_text()
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port = active.read_text().splitlines()[0]
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    async def send(self, method: str, **params: Any) -> dict:
        msg_id = next(self._ids)
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads((await self._ws.receive()).data)
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply
                return reply.get("result", {})

    async def goto(self, url: str) -> None:
        await self.send("Page.enable")
        await self.send("Page.navigate", url=url)
        await self.until("document.readyState === 'complete'", timeout=15)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, expression: str, timeout: float = 10.0, every: float = 0.05) -> float:
        """Wait for ``expression`` to be truthy; return the seconds it took."""
        began = time.monotonic()
        while not await self.eval(expression):
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            await asyncio.sleep(every)
        return time.monotonic() - began

    async def screenshot(self, path: Path) -> None:
        with contextlib.suppress(AssertionError):  # a hint only: a page taller than the window
            await self.send("Emulation.setDeviceMetricsOverride", width=self.size[0],
                            height=self.size[1], deviceScaleFactor=1, mobile=False)
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
