"""The browser viewer in headless Chromium, driven over the DevTools protocol: it lists
trees by tag, shows a running tree turning SUCCESS, and the selected job's log lines
(relayed from another node). A screenshot is saved under test-artifacts/."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, CHROMIUM, open_page
from tests.helpers import wait_for
from tests.ws_helpers import Cluster, cluster_of


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def test_viewer_shows_a_live_tree_and_log(cluster: Cluster, browser: str,
                                          tmp_path: Path) -> None:
    a = cluster.add("a")
    cluster.add("b")
    assert a is not None
    gate = tmp_path / "gate"  # the build goes on once the page has shown it live
    spec = {"title": "deploy shop", "kind": "noop", "node": "a",
            "tags": {"workspace": "acme", "application": "shop"},
            "children": [{"title": "build", "kind": "shell", "node": "b", "params": {
                "command": ["sh", "-c", "for i in $(seq 1 8); do echo build step $i; "
                            f"sleep 0.15; if [ $i = 3 ]; then while [ ! -e {gate} ]; do "
                            "sleep 0.05; done; fi; done"]}}]}
    root = cluster.client.submit(spec)
    child = cluster.client.status(root)["children"][0]["id"]
    page = open_page(browser, f"http://{a.address}/?workspace=acme")
    try:
        # The tree is listed with its tags; clicking it, then the job, selects them.
        wait_for(lambda: page.js(f"!!document.querySelector('#trees li[data-id=\"{root}\"]')"),
                 timeout=10, what="tree listed")
        assert "workspace=acme" in page.js("document.getElementById('trees').innerText")
        page.js(f"document.querySelector('#trees li[data-id=\"{root}\"]').click()")
        row = f"document.querySelector('.job[data-id=\"{child}\"]')"
        wait_for(lambda: page.js(f"!!{row}"), timeout=10, what="tree rendered")
        page.js(f"{row}.click()")
        root_state = f"document.querySelector('.job[data-id=\"{root}\"] .state').textContent"
        # Live: a log line appears while the tree is still running.
        wait_for(lambda: "build step 2" in page.js("document.getElementById('log').textContent")
                 and page.js(root_state) != "SUCCESS", timeout=10, what="live log line")
        gate.touch()
        wait_for(lambda: page.js(root_state) == "SUCCESS", timeout=15, what="tree SUCCESS")
        wait_for(lambda: "log complete" in page.js(
            "document.getElementById('log-status').textContent"), timeout=10)
        log_text = page.js("document.getElementById('log').textContent")
        assert log_text.encode() == cluster.log_bytes("b", child)
        assert page.js(f"{row}.querySelector('.state').textContent") == "SUCCESS"
        assert page.js(f"{row}.querySelector('.dur').textContent").endswith("s")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / "viewer.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        page.close()
