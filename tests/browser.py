"""Headless Chromium for the viewer tests, driven over the DevTools protocol (the
``browser`` fixture lives in conftest.py)."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as ws_connect

from tests.helpers import dies_with_parent, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

class Page:
    """A minimal DevTools protocol client for one page."""

    def __init__(self, ws_url: str) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(ws_connect(ws_url, max_size=None, open_timeout=10))
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=10))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise AssertionError(reply["error"])
                return dict(reply.get("result", {}))

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def chromium() -> Iterator[str]:
    """A headless Chromium; yields its DevTools HTTP address."""
    assert CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="jobgrove-chromium-")
    proc = subprocess.Popen(
        [*dies_with_parent(), CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1400,900",
         f"--user-data-dir={profile}",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        # Its first start on a loaded machine can take long (hence one per session).
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout=60,
                 what="chromium's DevTools port")
        yield f"127.0.0.1:{port_file.read_text().split()[0]}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def open_page(devtools: str, url: str) -> Page:
    with urllib.request.urlopen(f"http://{devtools}/json/list", timeout=5) as res:
        targets = [t for t in json.load(res) if t.get("type") == "page"]
    page = Page(targets[0]["webSocketDebuggerUrl"])
    page.call("Page.enable")
    # The tab is shared by the session's tests: leave the last test's page first (a URL
    # differing only in its #hash would not load again).
    page.call("Page.navigate", url="about:blank")
    page.call("Page.navigate", url=url)
    return page
