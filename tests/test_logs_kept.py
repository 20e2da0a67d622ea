"""Logs that outlive their node, with real node processes, the real CLI and a foreign
websocket client: the end of a job's log is stored in Redis when the job ends and
served once its node is gone (whole, or cut with the cut said); nothing hangs, and
every subscription ends with ``end`` or ``error``, whatever happened to the node."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from jobgrove import Client
from tests.cluster import REPO, Cluster, flat, record_of, wait_done, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.redis


def logs(redis_url: str, job: str, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgrove", "logs", job, *more, "--redis",
                           redis_url], cwd=REPO, capture_output=True, text=True, timeout=60)


def subscribe(address: str, job: str, **fields: Any) -> list[dict[str, Any]]:
    """Every frame of one subscription, up to its ``end`` or ``error``."""
    frames: list[dict[str, Any]] = []
    with ws_connect(f"ws://{address}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job, **fields}))
        while not frames or frames[-1]["type"] not in ("end", "error"):
            frame = json.loads(ws.recv(timeout=15))
            if frame.get("job") == job:
                frames.append(frame)
            if frame["type"] == "live" and not fields.get("follow", True):
                break
    return frames


def text_of(frames: list[dict[str, Any]], start: int) -> bytes:
    data = b""
    for frame in frames:
        if frame["type"] == "log":
            assert frame["offset"] == start + len(data), "a gap or a duplicate"
            data += frame["data"].encode()
    return data


@pytest.fixture
def viewer(redis_url: str, cluster: Cluster) -> str:
    """A node whose endpoint serves the CLI and the websocket client."""
    cluster.start("v1", redis_url, listen="127.0.0.1:0")
    record = record_of(Client(redis_url), "v1")
    assert record is not None
    return str(record["address"])


def test_a_stopped_nodes_logs_are_served_whole(redis_url: str, cluster: Cluster,
                                               viewer: str) -> None:
    node = cluster.start("w1", redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    job = client.submit({"kind": "shell", "node": "w1", "params": {
        "command": "for i in $(seq 1 50); do echo line $i; done"}})
    wait_done(client, job)
    full = node.log_file(job).read_bytes()
    assert node.stop() == 0
    started = time.monotonic()
    result = logs(redis_url, job)
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == full
    assert "node w1 is gone" in result.stderr and f"all of its {len(full)} bytes" \
        in result.stderr
    assert time.monotonic() - started < 10
    follow = logs(redis_url, job, "-f")
    assert follow.returncode == 0 and follow.stdout.encode() == full
    frames = subscribe(viewer, job)
    assert frames[0]["type"] == "kept" and frames[0]["offset"] == 0
    assert frames[0]["missing"] == 0 and frames[0]["size"] == len(full)
    assert text_of(frames, 0) == full
    assert frames[-1] == {"type": "end", "job": job, "state": "SUCCESS", "offset": len(full)}
    # No node endpoint left at all: the CLI reads the copy from Redis itself.
    assert cluster.nodes[0].stop() == 0
    alone = logs(redis_url, job)
    assert alone.returncode == 0 and alone.stdout.encode() == full, alone.stderr
    assert "no node endpoint is reachable" in alone.stderr


def test_a_cut_copy_says_what_was_not_kept(redis_url: str, cluster: Cluster,
                                           viewer: str) -> None:
    node = cluster.start("w2", redis_url, listen="127.0.0.1:0",
                         extra=["--log-keep-bytes", "300"])
    client = Client(redis_url)
    job = client.submit({"kind": "shell", "node": "w2", "params": {
        "command": "for i in $(seq 1 100); do echo line $i; done"}})
    wait_done(client, job)
    full = node.log_file(job).read_bytes()
    assert node.stop() == 0
    result = logs(redis_url, job)
    assert result.returncode == 0, result.stderr
    kept = result.stdout.encode()
    assert 290 <= len(kept) <= 300 and full.endswith(kept) and b"line 100" in kept
    cut = len(full) - len(kept)
    assert f"the first {cut} of its {len(full)} bytes were not kept" in result.stderr
    frames = subscribe(viewer, job)
    assert frames[0]["type"] == "kept"
    assert frames[0]["offset"] == cut and frames[0]["missing"] == cut
    assert "not kept" in frames[0]["message"]
    assert text_of(frames, cut) == kept and frames[-1]["offset"] == len(full)
    later = subscribe(viewer, job, offset=cut + 10)
    assert later[0]["missing"] == 0 and text_of(later, cut + 10) == kept[10:]


def test_a_killed_node_never_leaves_anyone_waiting(redis_url: str, cluster: Cluster,
                                                   viewer: str) -> None:
    node = cluster.start("w3", redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    root = client.submit({"kind": "noop", "node": "w3", "children": [
        {"kind": "shell", "params": {"command": "echo working; sleep 60"}}]})
    job = next(j for j in flat(client, root) if j != root)
    wait_state(client, job, "RUNNING")
    wait_for(lambda: node.log_file(job).exists() and b"working" in
             node.log_file(job).read_bytes())
    node.kill()
    # Its lease has not lapsed yet: the job is RUNNING, on a node that does not answer.
    started = time.monotonic()
    result = logs(redis_url, job)
    assert result.returncode != 0 and "w3" in result.stderr, result
    assert time.monotonic() - started < 15
    frames = subscribe(viewer, job)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unavailable"
    wait_done(client, root, timeout=15)  # reaped: FAILED, the tree aborted
    assert client.job(job)["state"] == "FAILED"
    result = logs(redis_url, job)
    assert result.returncode != 0
    assert "was lost or stopped while job" in result.stderr and "no copy" in result.stderr
    started = time.monotonic()
    follow = logs(redis_url, job, "-f")  # a few tries, then it gives up
    assert follow.returncode != 0 and "no copy" in follow.stderr, follow
    assert time.monotonic() - started < 20
    for follow in (True, False):
        frames = subscribe(viewer, job, follow=follow)
        assert frames[-1]["type"] == "error" and "no copy" in frames[-1]["message"]
    # A job of that node which never ran: its log is empty, and that is the answer.
    never = root
    assert client.job(never)["state"] == "ABORTED" and client.job(never)["started"] is None
    assert subscribe(viewer, never)[-1] == {"type": "end", "job": never,
                                            "state": "ABORTED", "offset": 0}
    result = logs(redis_url, never)
    assert result.returncode == 0 and result.stdout == ""


def test_a_node_without_an_endpoint_still_has_its_logs_read(redis_url: str, cluster: Cluster,
                                                           viewer: str) -> None:
    node = cluster.start("w4", redis_url)  # --listen none: nobody can ask it directly
    client = Client(redis_url)
    job = client.submit({"kind": "shell", "node": "w4", "params": {"command": "echo quiet"}})
    wait_done(client, job)
    result = logs(redis_url, job)
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == node.log_file(job).read_bytes()
    assert "node w4 cannot be reached" in result.stderr


def test_a_frozen_nodes_logs_are_served_from_the_copy(redis_url: str, cluster: Cluster,
                                                     viewer: str) -> None:
    """A node process that is frozen (SIGSTOP) still accepts connections but never
    answers: neither the CLI nor another node waits on it for long."""
    node = cluster.start("w5", redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    job = client.submit({"kind": "shell", "node": "w5", "params": {"command": "echo cold"}})
    wait_done(client, job)
    full = node.log_file(job).read_bytes()
    node.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = logs(redis_url, job[:8])
        assert result.returncode == 0, result.stderr
        assert result.stdout.encode() == full
        assert time.monotonic() - started < 12
        frames = subscribe(viewer, job)
        assert frames[0]["type"] == "kept" and text_of(frames, 0) == full
        assert frames[-1]["type"] == "end"
        # Following a log that cannot be served ends too (a few tries, then exit 2).
        assert Client(redis_url).stored_log(job[:8]) is not None
    finally:
        node.signal(signal.SIGCONT)
