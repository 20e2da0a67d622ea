"""Regressions for failure modes found in review: lost replies, refusals inside a
pipeline, very wide parents, background processes of shell jobs, wait timeouts."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from jobgrove import Client, WaitTimeoutError
from jobgrove.core.spec import parse_spec
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.records import Finish
from jobgrove.messaging.redis_errors import refuses_service
from tests.helpers import wait_for


def test_a_claim_whose_reply_was_lost_is_run_by_its_node(nodes: Any, redis_url: str) -> None:
    node = nodes("n1", redis_url, reconcile_interval=0.3)
    client = Client(redis_url)
    node.drain()  # the node claims nothing by itself...
    tree = client.submit({"kind": "noop", "node": "n1"})
    # ...so this claim, made "for n1" (by its process) whose reply never reaches n1, is
    # the only one.
    assert len(client.store.claim(tree, "n1", 5, node.lease.holder)) == 1
    assert client.job(tree)["state"] == "RUNNING"
    status = client.wait(tree, timeout=10)
    assert status["state"] == "SUCCESS"
    assert status["summary"] == "ok"


def test_refusals_inside_a_pipeline_count_as_unavailable() -> None:
    busy = redis.ResponseError("Command # 1 (EVALSHA abc 1 k) of pipeline caused error: "
                               "BUSY Redis is busy running a script.")
    assert refuses_service(busy)
    assert refuses_service(redis.ResponseError("LOADING Redis is loading the dataset"))
    assert not refuses_service(redis.ResponseError("ERR wrong number of arguments"))


def test_parent_of_9000_children_gets_their_results(redis_url: str) -> None:
    client = Client(redis_url)
    spec = {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}] * 9000}
    jobs, tags = parse_spec(spec, kind_infos())
    root = client.store.submit(jobs, tags)
    claims = client.store.claim(root, "n1", 10_000)
    assert len(claims) == 9000
    outcomes = client.store.finish_many([
        Finish(root, c.id, c.token, True, "ok", {"n": i}, "n1", True)
        for i, c in enumerate(claims)])
    assert all(o.verdict == "ok" for o in outcomes)
    [parent] = [o.claimed for o in outcomes if o.claimed is not None]
    assert parent.id == root and len(parent.results) == 9000
    assert client.job(root)["state"] == "RUNNING"


def test_shell_background_processes_end_with_the_job(nodes: Any, redis_url: str,
                                                     tmp_path: Path) -> None:
    nodes("n1", redis_url)
    client = Client(redis_url)
    pid_file = tmp_path / "pid"
    tree = client.submit({"kind": "shell", "node": "n1", "params": {
        "command": f"sleep 60 & echo $! > {pid_file}; echo started"}})
    assert client.wait(tree, timeout=10)["state"] == "SUCCESS"
    pid = int(pid_file.read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie is gone too: it only waits for its parent to reap it.
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    try:
        wait_for(gone, timeout=5, what="the background sleep to be stopped")
    finally:
        if not gone():
            os.kill(pid, signal.SIGKILL)


def test_wait_timeout_raises_wait_timeout_error(nodes: Any, redis_url: str) -> None:
    nodes("n1", redis_url)
    client = Client(redis_url)
    tree = client.submit({"kind": "sleep", "node": "n1", "params": {"seconds": 5}})
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError):
        client.wait(tree, timeout=0.3)
    assert time.monotonic() - started < 3
    client.abort(tree)
