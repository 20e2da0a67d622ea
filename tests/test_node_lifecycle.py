"""Node states with real node processes: ``up``, ``stopped`` (graceful stop) and
``lost`` (killed, lease lapsed) in ``nodes`` and ``nodes --json``; ``nodes forget``
for stopped and lost nodes only (and only once nothing runs or waits there); no secret
in any output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobgrove import Client
from tests.cluster import REPO, Cluster, flat, wait_done, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.redis


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgrove", *args, "--redis", redis_url],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def states(redis_url: str) -> dict[str, str]:
    result = cli(redis_url, "nodes", "--json")
    assert result.returncode == 0, result.stderr
    return {n["name"]: n["state"] for n in json.loads(result.stdout)}


def test_states_forget_and_no_secrets(redis_url: str, cluster: Cluster,
                                      tmp_path: Path) -> None:
    nodes = cluster.start_many(["up1", "stop1", "lost1"], redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    redis = client.store.client
    tokens = {name: redis.get(client.keys.lease(name)) for name in nodes}
    assert all(tokens.values())
    gate = tmp_path / "gate"
    root = client.submit({"kind": "noop", "node": "up1", "children": [
        {"kind": "jgc-gate", "node": "lost1", "params": {"path": str(gate)}}]})
    job = next(j for j in flat(client, root) if j != root)
    wait_state(client, job, "RUNNING")
    assert nodes["stop1"].stop() == 0
    nodes["lost1"].kill()
    assert states(redis_url)["stop1"] == "stopped"
    wait_for(lambda: states(redis_url)["lost1"] == "lost", timeout=10, what="lease lapsed")
    wait_done(client, root, timeout=15)  # reaped: its job FAILED, the tree aborted
    listing = cli(redis_url, "nodes", "--json")
    entries = {n["name"]: n for n in json.loads(listing.stdout)}
    assert {n: e["state"] for n, e in entries.items()} == {
        "up1": "up", "stop1": "stopped", "lost1": "lost"}
    assert {n: e["alive"] for n, e in entries.items()} == {
        "up1": True, "stop1": False, "lost1": False}
    for entry in entries.values():
        assert {"name", "alive", "state", "address", "running"} <= set(entry)
        assert "lease_token" not in entry and "epoch" not in entry
    text = cli(redis_url, "nodes")
    assert text.returncode == 0
    lines = {words[0]: words[1] for words in map(str.split, text.stdout.splitlines())
             if words and words[0] in nodes}
    assert lines == {"up1": "up", "stop1": "stopped", "lost1": "lost"}
    for output in (listing.stdout, text.stdout, cli(redis_url, "status", root).stdout,
                   cli(redis_url, "status", root, "--json").stdout):
        for token in tokens.values():
            assert token not in output
    # Forget: refused for a live node, done for the stopped and the lost one.
    live = cli(redis_url, "nodes", "forget", "up1")
    assert live.returncode == 2 and "node up1 is up" in live.stderr
    for name in ("stop1", "lost1"):
        done = cli(redis_url, "nodes", "forget", name)
        assert done.returncode == 0 and done.stdout.strip() == f"forgot node {name}"
    assert states(redis_url) == {"up1": "up"}
    assert not redis.exists(client.keys.node_trees("lost1"))
    again = cli(redis_url, "nodes", "forget", "lost1")
    assert again.returncode == 2 and "no node named 'lost1'" in again.stderr
    # A forgotten name may register again, as a new node.
    cluster.start("stop1", redis_url)
    assert states(redis_url) == {"up1": "up", "stop1": "up"}


def test_forget_is_refused_while_trees_have_work_for_the_node(redis_url: str,
                                                               cluster: Cluster) -> None:
    node = cluster.start("w1", redis_url)
    client = Client(redis_url)
    assert node.stop() == 0
    root = client.submit({"kind": "noop", "node": "w1"})  # waits for w1
    refused = cli(redis_url, "nodes", "forget", "w1")
    assert refused.returncode == 2 and root in refused.stderr
    client.abort(root)
    assert cli(redis_url, "nodes", "forget", "w1").returncode == 0
