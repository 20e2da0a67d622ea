"""The browser viewer shows the log of a job whose node is gone: the end that node
stored in Redis, with the cut marked and said (headless Chromium, as
``test_viewer_browser``)."""

from __future__ import annotations

import pytest

from jobgrove import Client, Node
from jobgrove.jobs.log import log_path
from tests.browser import CHROMIUM, open_page
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def test_viewer_shows_the_stored_end_of_a_gone_nodes_log(redis_url: str, log_dir: str,
                                                          browser: str) -> None:
    a = Node("a", redis=redis_url, log_dir=f"{log_dir}/a", listen="127.0.0.1:0").start()
    b = Node("b", redis=redis_url, log_dir=f"{log_dir}/b", listen="127.0.0.1:0",
             log_keep_bytes=256).start()
    try:
        client = Client(redis_url)
        root = client.submit({"title": "gone", "kind": "shell", "node": "b", "params": {
            "command": "for i in $(seq 1 60); do echo output line $i; done"}})
        client.wait(root, timeout=15)
        b.stop()
        data = log_path(b.log_dir, root).read_bytes()
        page = open_page(browser, f"http://{a.address}/#tree={root}&job={root}")
        try:
            log = "document.getElementById('log').textContent"
            wait_for(lambda: "output line 60" in (page.js(log) or ""), timeout=15,
                     what="the log")
            status = "document.getElementById('log-status').textContent"
            wait_for(lambda: "log complete" in (page.js(status) or ""), timeout=10)
            assert "node b is gone" in page.js(status) and "not kept" in page.js(status)
            shown = page.js(log)
            marker, _, kept = shown.partition("\n")
            assert marker.startswith("[… ") and "bytes not kept" in marker
            assert data.endswith(kept.encode()) and 240 <= len(kept.encode()) <= 256
            assert f"{len(data) - len(kept.encode())} bytes not kept" in marker
        finally:
            page.close()
    finally:
        a.stop(graceful=False)
        b.stop(graceful=False)
