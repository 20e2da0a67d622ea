"""Malformed and misleading pub/sub messages published on the node and tree channels:
nodes log and ignore them, keep their lease and keep running trees. (Pub/sub messages
are only hints to re-read Redis: see jobgrove/messaging/pubsub.py.)"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from jobgrove import Client
from tests.cluster import (
    Cluster,
    NodeProc,
    flat,
    record_of,
    wait_done,
    wait_state,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.redis



def garbage(real_root: str) -> list[bytes | str]:
    unknown = str(uuid.uuid4())
    return [
        # not JSON, or not an object
        "garbage", "", "{", "[]", "null", "42", '"text"', "true", "{\"t\": \"ready\", ",
        # wrong types and missing fields
        '{"t": 5, "root": 5}', '{"t": "ready"}', '{"t": "ready", "root": null}',
        '{"t": "ready", "root": 12}', '{"t": "ready", "root": ["x"]}',
        '{"t": "abort", "root": {"a": 1}}', '{"t": ["ready"], "root": "' + real_root + '"}',
        '{"t": "bogus", "root": "' + real_root + '"}', '{"root": "' + real_root + '"}',
        # unknown ids and odd strings
        json.dumps({"t": "ready", "root": unknown}), json.dumps({"t": "abort", "root": unknown}),
        json.dumps({"t": "done", "root": unknown}), json.dumps({"t": "ready", "root": "x"}),
        json.dumps({"t": "abort", "root": "../../../etc/passwd"}),
        json.dumps({"t": "ready", "root": "\u0000\u202e"}),
        # huge
        json.dumps({"t": "ready", "root": "x" * 100_000}),
        json.dumps({"t": "ready", "root": unknown, "pad": "y" * 2_000_000}),
        "z" * 3_000_000,
        # not UTF-8
        b"\xff\xfe\xfd{\"t\": \"ready\"}",
        # nested deeper than the JSON decoder's recursion limit (last: see the report)
        "[" * 100_000 + "]" * 100_000,
    ]


def node_ok(client: Client, node: NodeProc) -> None:
    """The node process runs, holds its lease and runs a job."""
    assert node.running, node.stderr()[-3000:]
    record = record_of(client, node.name)
    assert record is not None and record["alive"] and record["pid"] == node.pid
    root = client.submit({"kind": "noop", "node": node.name})
    status = wait_done(client, root, timeout=10)
    assert status["state"] == "SUCCESS"


def test_malformed_messages_on_node_and_tree_channels(redis_url: str, cluster: Cluster,
                                                      tmp_path: Path) -> None:
    # Built-in kinds only (none has an undo hook; for that path see the next test).
    nodes = cluster.start_many(["m1", "m2"], redis_url, imports=())
    client = Client(redis_url)
    go = tmp_path / "go"
    gate = {"command": f"while [ ! -e {go} ]; do sleep 0.02; done"}
    root = client.submit({"kind": "noop", "node": "m1", "children": [
        {"kind": "shell", "node": "m1", "title": "gate-1", "params": gate},
        {"kind": "shell", "node": "m2", "title": "gate-2", "params": gate}]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    wait_state(client, ids["gate-1"], "RUNNING")
    wait_state(client, ids["gate-2"], "RUNNING")
    raw = redis.Redis.from_url(redis_url)  # bytes in, bytes out
    channels = [client.keys.node_channel("m1"), client.keys.node_channel("m2"),
                client.keys.tree_channel(root)]
    for message in garbage(root):
        for channel in channels:
            raw.publish(channel, message)
    # Each node is still there, and the running tree goes on.
    for node in nodes.values():
        node_ok(client, node)
    go.touch()
    status = wait_done(client, root, timeout=15)
    assert status["state"] == "SUCCESS", flat(client, root)
    for node in nodes.values():
        err = node.stderr()
        assert "ignored" in err
        assert "Unhandled exception" not in err, err[-4000:]
        reconnects = err.count("pub/sub listener error")
        print(f"{node.name}: {err.count('ignored')} 'ignored' warnings, {reconnects} "
              f"pub/sub reconnections caused by the messages")
        node_ok(client, node)
        # Ignored means ignored: no message may cost the node its subscription (hints
        # published while it resubscribes are lost until the next reconciliation).
        assert reconnects == 0, err[-6000:]


def test_client_wait_ignores_malformed_tree_messages(redis_url: str, cluster: Cluster,
                                                     tmp_path: Path) -> None:
    """``Client.wait`` (and so ``submit --follow --json``) listens on the tree's done
    channel; garbage there (or on the tree channel) must not break it."""
    cluster.start("w1", redis_url, imports=())
    client = Client(redis_url)
    go = tmp_path / "go"
    root = client.submit({"kind": "shell", "node": "w1",
                          "params": {"command": f"while [ ! -e {go} ]; do sleep 0.02; done"}})
    wait_state(client, root, "RUNNING")
    waited: dict[str, Any] = {}

    def wait_tree() -> None:
        try:
            waited["status"] = Client(redis_url).wait(root, timeout=30)
        except Exception as exc:
            waited["error"] = exc

    waiter = threading.Thread(target=wait_tree, daemon=True)
    waiter.start()
    raw = redis.Redis.from_url(redis_url)
    wait_for(lambda: raw.pubsub_numsub(client.keys.done_channel(root))[0][1] >= 1,
             timeout=10, what="the waiting client to subscribe")
    for message in garbage(root):
        raw.publish(client.keys.done_channel(root), message)
        raw.publish(client.keys.tree_channel(root), message)
    go.touch()
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert "error" not in waited, f"Client.wait failed: {waited.get('error')!r}"
    assert waited["status"]["state"] == "SUCCESS"


def test_node_survives_an_abort_hint_for_an_unknown_tree(redis_url: str,
                                                        cluster: Cluster) -> None:
    # The node imports a kind with an undo hook (tests.cluster's jgc-undoable): an
    # "abort" hint then makes it look for succeeded jobs to undo in that tree.
    node = cluster.start("u1", redis_url)
    client = Client(redis_url)
    client.store.client.publish(client.keys.node_channel("u1"),
                                json.dumps({"t": "abort", "root": str(uuid.uuid4())}))
    node_ok(client, node)
    assert "Unhandled exception" not in node.stderr(), node.stderr()[-4000:]


def test_well_formed_but_false_abort_hint_changes_nothing(redis_url: str, cluster: Cluster,
                                                          tmp_path: Path) -> None:
    """An "abort" hint for a tree that is not aborting (stale, or simply wrong) must not
    abort its running jobs nor undo its succeeded ones: the node re-reads Redis."""
    node = cluster.start("f1", redis_url)
    client = Client(redis_url)
    go, marker = tmp_path / "go", tmp_path / "undone"
    root = client.submit({"kind": "noop", "node": "f1", "children": [
        {"kind": "jgc-undoable", "node": "f1", "title": "done-already",
         "params": {"marker": str(marker)}},
        {"kind": "jgc-gate", "node": "f1", "title": "running", "params": {"path": str(go)}}]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    wait_state(client, ids["done-already"], "SUCCESS")
    wait_state(client, ids["running"], "RUNNING")
    client.store.client.publish(client.keys.node_channel("f1"),
                                json.dumps({"t": "abort", "root": root}))
    # A real abort would be seen by now; give the false one the same time.
    probe = client.submit({"kind": "noop", "node": "f1"})
    wait_done(client, probe)
    go.touch()
    status = wait_done(client, root, timeout=15)
    jobs = {j["title"]: (j["state"], j["summary"]) for j in flat(client, root).values()}
    assert status["state"] == "SUCCESS", jobs
    assert not marker.exists(), marker.read_text()
    assert node.running
    wait_for(lambda: record_of(client, "f1")["alive"], timeout=5, what="lease")


def test_false_done_hint_does_not_hide_a_tree_from_its_node(redis_url: str, cluster: Cluster,
                                                            tmp_path: Path) -> None:
    """A "done" hint for a tree that is not done must not make the node forget it: the
    node's set of trees is what reconciliation and the reaping of a lost node go by."""
    nodes = cluster.start_many(["x1", "y1"], redis_url)
    client = Client(redis_url)
    child_gate, parent_gate = tmp_path / "child", tmp_path / "parent"
    root = client.submit({"kind": "jgc-gate", "node": "x1", "title": "parent",
                          "params": {"path": str(parent_gate)}, "children": [
                              {"kind": "jgc-gate", "node": "y1", "title": "child",
                               "params": {"path": str(child_gate)}}]})
    child = next(j["id"] for j in flat(client, root).values() if j["id"] != root)
    wait_state(client, child, "RUNNING")
    trees_of_x1 = client.keys.node_trees("x1")
    assert client.store.client.sismember(trees_of_x1, root)
    client.store.client.publish(client.keys.node_channel("x1"),
                                json.dumps({"t": "done", "root": root}))
    # Give the hint the time a round trip through x1 takes.
    probe = client.submit({"kind": "noop", "node": "x1"})
    wait_done(client, probe)
    assert client.store.client.sismember(trees_of_x1, root), "x1 forgot a live tree"
    # What it costs otherwise: x1 runs the parent, dies, and nobody finds the job.
    child_gate.touch()
    wait_state(client, root, "RUNNING")
    nodes["x1"].kill()
    status = wait_done(client, root, timeout=15)
    assert status["state"] == "FAILED" and "lost" in status["summary"]
