"""The viewer people can act in, in headless Chromium: a deep link opens a tree and a
job's log; the log pane is titled with the job's title, state and node, stderr lines
are marked; the tree list shows the derived state and counts; Abort asks for
confirmation, then aborts through the page's own authenticated websocket; aborted jobs
show their cause; a job waiting for a node that is not registered says so."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobgrove.endpoint.auth import mint_token
from tests.browser import ARTIFACTS, CHROMIUM, Page, open_page
from tests.helpers import wait_for
from tests.ws_helpers import Cluster, cluster_of

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")

SECRET = b"an-actions-test-secret-0123456789"


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def text_of(page: Page, selector: str) -> str:
    return str(page.js(f"(document.querySelector({selector!r}) || {{}}).textContent || ''"))


def visible(page: Page, element_id: str) -> bool:
    return bool(page.js(f"!document.getElementById({element_id!r}).hidden"))


def click(page: Page, selector: str) -> None:
    assert page.js(f"!!document.querySelector({selector!r})"), selector
    page.js(f"document.querySelector({selector!r}).click()")


def test_abort_with_confirmation_cause_titles_and_counts(cluster: Cluster, browser: str,
                                                         tmp_path: Path) -> None:
    a = cluster.add("a", secret=SECRET)
    cluster.add("b", secret=SECRET)
    assert a is not None
    client = cluster.client
    root = client.submit({
        "title": "deploy shop", "kind": "noop", "node": "a",
        "tags": {"workspace": "acme"},
        "children": [
            {"title": "build", "kind": "shell", "node": "b", "params": {
                "command": "echo compiling; echo 'warning: deprecated' >&2; sleep 60"}},
            {"title": "lint", "kind": "sleep", "params": {"seconds": 60}}]})
    build, lint = (j["id"] for j in client.status(root)["children"])
    token = mint_token(SECRET, 600)
    page = open_page(browser, f"http://{a.address}/?token={token}&workspace=acme"
                              f"#tree={root}&job={build}")
    try:
        # The deep link opened the tree and the build's log (relayed from node b).
        wait_for(lambda: text_of(page, "#log-title") == "build · RUNNING · on b",
                 timeout=15, what=f"log title (now {text_of(page, '#log-title')!r})")
        wait_for(lambda: "[stderr] warning: deprecated" in text_of(page, "#log .stderr"),
                 timeout=10, what="the stderr line, marked")
        assert "compiling" in text_of(page, "#log")
        assert "compiling" not in text_of(page, "#log .stderr")
        entry = f'#trees li[data-id="{root}"]'
        wait_for(lambda: text_of(page, f"{entry} .state") == "RUNNING"
                 and text_of(page, f"{entry} .counts") == "0/3 ok, 1 new, 2 running",
                 timeout=10, what=f"derived state in the list "
                                  f"({text_of(page, entry)!r})")
        assert visible(page, "abort-job") and visible(page, "abort-tree")
        assert not visible(page, "rerun")  # only for a done tree that did not succeed

        # Abort asks first; Cancel sends nothing.
        click(page, "#abort-job")
        assert visible(page, "confirm")
        assert "build" in text_of(page, "#confirm-text")
        click(page, "#confirm-no")
        assert not visible(page, "confirm")
        assert client.job(build)["state"] == "RUNNING"

        click(page, "#abort-job")
        click(page, "#confirm-yes")
        status = wait_for(lambda: (s := client.status(root))["state"] == "ABORTED"
                          and all(j["state"] != "RUNNING" for j in s["children"]) and s,
                          timeout=15, what="the tree aborted")
        jobs = {j["title"]: j for j in status["children"]}
        assert jobs["build"]["state"] == "ABORTED" and jobs["build"]["cause"] == build
        assert jobs["lint"]["state"] == "ABORTED" and jobs["lint"]["cause"] == build

        # The page shows it: states, causes, the title, no more abort buttons.
        lint_row = f'.job[data-id="{lint}"]'
        wait_for(lambda: text_of(page, f"{lint_row} .state") == "ABORTED"
                 and "cause: build" in text_of(page, f"{lint_row} + .summary"), timeout=10,
                 what=f"lint's cause ({text_of(page, f'{lint_row} + .summary')!r})")
        wait_for(lambda: text_of(page, "#log-title") == "build · ABORTED · on b", timeout=10,
                 what="the log title to follow the state")
        assert "aborted by a user" in text_of(page, f'.job[data-id="{build}"] + .summary')
        wait_for(lambda: "tree ABORTED" in text_of(page, "#tree-banner")
                 or "aborting" in text_of(page, "#tree-banner"), timeout=10)
        assert not visible(page, "abort-job") and not visible(page, "abort-tree")
        wait_for(lambda: text_of(page, f"{entry} .state") == "ABORTED", timeout=10)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = page.call("Page.captureScreenshot", format="png")
        (ARTIFACTS / "viewer-aborted.png").write_bytes(base64.b64decode(shot["data"]))

        # The cause is a link to the job that caused it.
        click(page, f"{lint_row} + .summary .cause a")
        wait_for(lambda: page.js(f"document.querySelector('.job[data-id=\"{build}\"]')"
                                 ".classList.contains('selected')"), timeout=5)

        # The tree is done and did not succeed: it can run again, after a confirmation.
        wait_for(lambda: visible(page, "rerun"), timeout=10, what="the rerun button")
        click(page, "#rerun")
        assert visible(page, "confirm") and "Rerun" in text_of(page, "#confirm-text")
        click(page, "#confirm-yes")
        wait_for(lambda: client.status(root)["run"] == 2, timeout=10, what="run 2")
        wait_for(lambda: "run 2" in text_of(page, "#tree-banner")
                 or text_of(page, f"{lint_row} .state") in ("WAITING", "RUNNING"),
                 timeout=10, what="the page to show the tree running again")
        wait_for(lambda: text_of(page, f"{lint_row} .state") in ("WAITING", "RUNNING"),
                 timeout=10, what=f"lint again ({text_of(page, lint_row)!r})")
    finally:
        page.close()


def test_a_job_waiting_for_an_unregistered_node_says_so(cluster: Cluster,
                                                        browser: str) -> None:
    a = cluster.add("a")
    assert a is not None
    root = cluster.client.submit({"title": "stuck", "kind": "noop", "node": "a",
                                  "children": [{"title": "elsewhere", "kind": "noop",
                                                "node": "ghost"}]},
                                 allow_unknown_node=True)
    child = cluster.client.status(root)["children"][0]["id"]
    page = open_page(browser, f"http://{a.address}/#tree={root}")
    try:
        note = "waiting for node ghost (not registered)"
        wait_for(lambda: note in text_of(page, f'#trees li[data-id="{root}"] .note'),
                 timeout=10, what="the note in the tree list")
        wait_for(lambda: note in text_of(page, f'.job[data-id="{child}"] + .summary'),
                 timeout=10, what="the note under the job")
        assert text_of(page, f'#trees li[data-id="{root}"] .state') == "WAITING"
    finally:
        page.close()
