"""Log streaming and relay through the node endpoint, driven by a websocket client that
is not ours (the ``websockets`` package)."""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from jobgrove.cli.logs import fetch_tree, print_log, stream_log, tail_reader
from jobgrove.endpoint.client import WsError
from tests.helpers import free_port, wait_for
from tests.ws_helpers import UUID, Cluster, cluster_of, recv_json, until


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


SLOW_LINES = "for i in $(seq 1 30); do echo line $i; sleep 0.03; done"


def collect(ws: Any, job: str, data: bytearray, offset: int,
            stop_after: int | None = None) -> dict[str, Any] | None:
    """Append log frames to ``data`` checking offsets; the end frame, or None once
    ``stop_after`` bytes are held."""
    while True:
        frame = recv_json(ws)
        if frame["type"] == "log":
            assert frame["job"] == job
            assert frame["offset"] == offset + len(data), "a gap or a duplicate"
            data += frame["data"].encode()
            if stop_after is not None and len(data) >= stop_after:
                return None
        elif frame["type"] == "end":
            return frame
        elif frame["type"] == "error":
            raise AssertionError(frame)


def test_relay_live_resume_after_forced_disconnect_and_end(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.add("b")
    job = cluster.shell("b", SLOW_LINES)
    url = f"ws://{a.address}/ws"
    data = bytearray()
    with ws_connect(url) as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job, "offset": 0}))
        assert collect(ws, job, data, 0, stop_after=1) is None
        # Live: the first bytes arrive while the job still runs on node b.
        assert cluster.client.job(job)["state"] == "RUNNING"
        wait_for(lambda: b"line 3" in data or collect(ws, job, data, 0, len(data) + 1),
                 timeout=10)
        ws.socket.shutdown(socket.SHUT_RDWR)  # forced disconnect, no close handshake
    seen = len(data)
    with ws_connect(url) as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job, "offset": seen}))
        end = collect(ws, job, data, 0)
    assert end is not None and end["state"] == "SUCCESS"
    full = cluster.log_bytes("b", job)
    assert bytes(data) == full  # nothing lost, nothing twice
    assert end["offset"] == len(full)
    assert b"line 30" in full and b"line 3\n" in full[:seen + 200]


def test_relay_resumes_when_the_upstream_connection_drops(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.add("b")
    job = cluster.shell("b", SLOW_LINES)
    data = bytearray()
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job, "offset": 0}))
        collect(ws, job, data, 0, stop_after=1)
        upstreams = wait_for(lambda: [u for u in a._upstreams if u.is_alive()])
        upstreams[0].drop()  # node a's relay loses node b mid-stream
        end = collect(ws, job, data, 0)
    assert end is not None and end["state"] == "SUCCESS"
    assert bytes(data) == cluster.log_bytes("b", job)


def test_lost_node_gives_an_error_frame(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.add("c", endpoint=False, address=f"127.0.0.1:{free_port()}")
    job = cluster.client.submit({"kind": "sleep", "node": "c", "params": {"seconds": 3}})
    wait_for(lambda: cluster.client.job(job)["state"] == "RUNNING")
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job}))
        error = until(ws, "error")
    assert error["code"] == "unavailable" and error["job"] == job
    assert "node c" in error["message"]


def test_local_logs_unknown_pending_and_never_started(cluster: Cluster) -> None:
    a = cluster.add("a")
    spec = {"kind": "shell", "node": "a", "params": {"command": ["echo", "parent ran"]},
            "children": [{"kind": "sleep", "params": {"seconds": 0.4}}]}
    root = cluster.client.submit(spec)
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "job": UUID}))
        assert until(ws, "error")["code"] == "not_found"
        # Not started yet: the subscription waits for the log to appear.
        assert cluster.client.job(root)["state"] == "NEW"
        ws.send(json.dumps({"type": "subscribe", "job": root}))
        text = ""
        while True:
            frame = recv_json(ws)
            if frame["type"] == "log":
                text += frame["data"]
            if frame["type"] == "end":
                break
        assert "parent ran" in text and frame["state"] == "SUCCESS"
        assert frame["offset"] == len(text.encode())
        # Aborted before it ever started: no log, end at offset 0.
        spec = {"kind": "noop", "node": "a",
                "children": [{"kind": "fail", "params": {"message": "no"}}]}
        failed = cluster.client.submit(spec)
        cluster.client.wait(failed, timeout=10)
        ws.send(json.dumps({"type": "subscribe", "job": failed, "offset": 0}))
        end = until(ws, "end")
        assert end == {"type": "end", "job": failed, "state": "ABORTED", "offset": 0}


def test_watch_sends_snapshot_then_every_change(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.add("b")
    spec = {"kind": "noop", "node": "a", "children": [
        {"kind": "sleep", "node": "b", "params": {"seconds": 0.3}},
        {"kind": "sleep", "params": {"seconds": 0.2}}]}
    root = cluster.client.submit(spec)
    states: dict[str, str] = {}
    with ws_connect(f"ws://{a.address}/ws") as ws:
        child = cluster.client.status(root)["children"][0]["id"]
        ws.send(json.dumps({"type": "watch", "tree": child}))  # any job id of the tree
        tree = until(ws, "tree")["tree"]
        assert tree["id"] == root and len(tree["children"]) == 2
        states = {tree["id"]: tree["state"]}
        while True:
            frame = recv_json(ws)
            if frame["type"] == "status":
                states[frame["job"]] = frame["state"]
            if frame["type"] == "done":
                break
    assert frame["state"] == "SUCCESS" and states[root] == "SUCCESS"
    assert len(states) == 3 and set(states.values()) == {"SUCCESS"}


def test_cli_stream_log_and_fetch_tree(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.add("b")
    job = cluster.shell("b", "echo one; sleep 0.3; echo two")
    out = io.StringIO()
    wait_for(lambda: b"one" in _log_or_empty(cluster, job))
    # Without follow: what the log holds now, then stop while the job runs.
    assert stream_log(a.address, job, follow=False, out=out) == "RUNNING"
    assert "Z one" in out.getvalue() and "Z two" not in out.getvalue()
    out = io.StringIO()
    assert stream_log(a.address, job, follow=True, out=out) == "SUCCESS"
    assert out.getvalue().encode() == cluster.log_bytes("b", job)
    assert fetch_tree(a.address, job)["state"] == "SUCCESS"
    try:
        stream_log(a.address, UUID, out=io.StringIO())
    except KeyError as exc:
        assert UUID in str(exc)
    else:
        raise AssertionError("unknown job accepted")
    port = free_port()
    start = time.monotonic()
    try:
        stream_log(f"127.0.0.1:{port}", job, out=io.StringIO(), retries=0)
    except WsError as exc:
        assert exc.code == "unavailable"
    assert time.monotonic() - start < 5


def test_cli_print_log_and_tails_find_a_node_in_the_registry(cluster: Cluster) -> None:
    cluster.add("a")
    cluster.add("b")
    job = cluster.shell("b", "echo hello; sleep 0.5; echo bye")
    tails = tail_reader(cluster.client)
    try:
        wait_for(lambda: "Z hello" in (tails(job, 4096) or ""), timeout=10, what="tail")
    finally:
        tails.close()
    out = io.StringIO()
    assert print_log(cluster.client, job, follow=True, out=out) == "SUCCESS"
    assert out.getvalue().encode() == cluster.log_bytes("b", job)
    with pytest.raises(KeyError):
        print_log(cluster.client, UUID, out=io.StringIO())


def _log_or_empty(cluster: Cluster, job: str) -> bytes:
    try:
        return cluster.log_bytes("b", job)
    except FileNotFoundError:
        return b""


def test_nodes_with_their_own_endpoints(redis_url: str, log_dir: str) -> None:
    """The same through Node(listen=...), the way `jobgrove node --listen` runs."""
    from jobgrove import Client, Node

    a = Node("a", redis=redis_url, log_dir=f"{log_dir}/a", listen="127.0.0.1:0").start()
    b = Node("b", redis=redis_url, log_dir=f"{log_dir}/b", listen="127.0.0.1:0").start()
    try:
        client = Client(redis_url)
        job = client.submit({"kind": "shell", "node": "b",
                             "params": {"command": ["sh", "-c", SLOW_LINES]}})
        out = io.StringIO()
        assert stream_log(str(a.address), job, follow=True, out=out) == "SUCCESS"
        assert "line 30" in out.getvalue()
        health = json.loads(urllib.request.urlopen(f"http://{b.address}/health").read())
        assert health == {"node": "b", "redis": "ok", "running": 0}
    finally:
        a.stop(graceful=False)
        b.stop(graceful=False)
