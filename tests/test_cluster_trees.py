"""Trees spread over real node processes: leaf-first across nodes, cross-node aborts,
hand-off latency. Each node is its own ``jobgrove node`` process on the private
redis-server (see tests/cluster.py)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from tests.cluster import Cluster, chain, flat, wait_done, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.redis



def test_tree_over_three_nodes_runs_leaf_first_where_assigned(redis_url: str,
                                                               cluster: Cluster,
                                                               tmp_path: Path) -> None:
    nodes = cluster.start_many(["n1", "n2", "n3"], redis_url)
    client = Client(redis_url)
    out = tmp_path / "out"
    out.mkdir()

    def shell(name: str, node: str, children: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
        # Each job leaves a file named after itself: proof that its code ran.
        return {"kind": "shell", "node": node, "title": name,
                "params": {"command": f"sleep 0.05; echo {name} > {out}/{name}"},
                "children": children or []}

    spec = shell("root", "n1", [
        shell("a", "n2", [shell("a1", "n3"), shell("a2", "n1"), shell("a3", "n2")]),
        shell("b", "n3", [shell("b1", "n1"), shell("b2", "n2")]),
        shell("c", "n1"),
    ])
    root = client.submit(spec)
    status = wait_done(client, root, timeout=30)
    assert status["state"] == "SUCCESS", status
    jobs = flat(client, root)
    assert len(jobs) == 9
    by_title = {j["title"]: j for j in jobs.values()}
    assert sorted(p.name for p in out.iterdir()) == sorted(by_title)
    for job in jobs.values():
        assert job["state"] == "SUCCESS"
        # It ran where it was assigned: its log is in that node's log dir, nowhere else.
        where = [name for name, node in nodes.items() if node.log_file(job["id"]).exists()]
        assert where == [job["node"]], (job["title"], where)
        text = nodes[job["node"]].log_file(job["id"]).read_text()
        assert f"on {job['node']}" in text
        # Leaf first: a parent starts only after each of its children finished.
        for child_id in job["child_ids"]:
            assert jobs[child_id]["finished"] <= job["started"], (job["title"], child_id)
    # The leaves of one parent ran in parallel on their different nodes.
    leaves = [by_title[t] for t in ("a1", "a2", "a3")]
    assert max(j["started"] for j in leaves) < min(j["finished"] for j in leaves)
    # `jobgrove nodes`: all three alive, nothing running any more (the record is
    # rewritten on each heartbeat).
    wait_for(lambda: all(r["alive"] and r["running"] == [] for r in client.nodes()),
             timeout=10, what="every node alive with nothing running")


def test_failure_on_one_node_aborts_running_jobs_on_the_others(redis_url: str,
                                                                cluster: Cluster,
                                                                tmp_path: Path) -> None:
    cluster.start_many(["a", "b", "c"], redis_url)
    client = Client(redis_url)
    go = tmp_path / "go"
    spec = {"kind": "noop", "node": "a", "children": [
        {"kind": "jgc-gate", "node": "a", "title": "failing",
         "params": {"path": str(go), "fail": True}},
        {"kind": "sleep", "node": "b", "title": "sleep-b", "params": {"seconds": 60}},
        {"kind": "shell", "node": "c", "title": "shell-c",
         "params": {"command": "sleep 60"}},
        {"kind": "jgc-gate", "node": "c", "title": "gate-c", "params": {"path": "/nonexistent"}},
        {"kind": "noop", "node": "b", "title": "parent-b", "children": [
            {"kind": "sleep", "node": "b", "params": {"seconds": 60}, "title": "sleep-b2"}]},
    ]}
    root = client.submit(spec)
    by_title = {j["title"]: j["id"] for j in flat(client, root).values()}
    for title in ("failing", "sleep-b", "shell-c", "gate-c", "sleep-b2"):
        wait_state(client, by_title[title], "RUNNING")
    go.touch()
    status = wait_done(client, root, timeout=20)
    jobs = {j["title"]: j for j in flat(client, root).values()}
    failed = jobs["failing"]
    assert failed["state"] == "FAILED"
    assert status["state"] == "ABORTED"
    delays = {}
    for title in ("sleep-b", "shell-c", "gate-c", "sleep-b2"):
        job = jobs[title]
        assert job["state"] == "ABORTED", job
        assert job["cause"] == failed["id"]
        delays[title] = job["finished"] - failed["finished"]
    assert jobs["parent-b"]["state"] == "ABORTED" and jobs["parent-b"]["started"] is None
    print("abort propagation (failed job finished -> aborted job finished): "
          + ", ".join(f"{t} on {jobs[t]['node']}: {d * 1000:.1f} ms" for t, d in delays.items()))
    # Target: within 1 s; the sleep and gate kinds stop at once, the shell job on SIGTERM.
    assert max(delays.values()) < 1.0 + 0.5, delays


def test_cross_node_handoff_latency(redis_url: str, cluster: Cluster) -> None:
    cluster.start_many(["h1", "h2"], redis_url, lease=5.0)
    client = Client(redis_url)
    depth = 61
    figures = {}
    for label, names in (("cross-node", ["h1", "h2"]), ("same node", ["h1"])):
        wait_done(client, client.submit(chain(names, 6)), timeout=30)  # warm-up
        root = client.submit(chain(names, depth))
        status = wait_done(client, root, timeout=60)
        assert status["state"] == "SUCCESS"
        jobs = flat(client, root)
        handoffs = []
        for job in jobs.values():
            for child_id in job["child_ids"]:
                if label == "cross-node":
                    assert jobs[child_id]["node"] != job["node"]
                handoffs.append(job["started"] - jobs[child_id]["finished"])
        assert len(handoffs) == depth - 1
        assert min(handoffs) >= 0
        handoffs.sort()
        figures[label] = (statistics.median(handoffs), handoffs[int(len(handoffs) * 0.9)],
                          handoffs[-1])
    for label, (median, p90, worst) in figures.items():
        print(f"{label} hand-off over a chain of {depth}: median {median * 1000:.2f} ms, "
              f"p90 {p90 * 1000:.2f} ms, max {worst * 1000:.2f} ms")
    # The target is < 5 ms median on loopback; the bound here leaves room for a busy
    # two-core machine shared with other test runs.
    assert figures["cross-node"][0] < 0.050, figures


def test_node_record_and_running_jobs(redis_url: str, cluster: Cluster,
                                      tmp_path: Path) -> None:
    cluster.start("r1", redis_url, concurrency=3,
                  listen="127.0.0.1:0")
    client = Client(redis_url)
    root = client.submit({"kind": "jgc-gate", "node": "r1",
                          "params": {"path": str(tmp_path / "go")}})
    wait_state(client, root, "RUNNING")

    def record() -> dict[str, Any] | None:
        found = [n for n in client.nodes() if n["name"] == "r1"]
        return found[0] if found and found[0]["running"] == [root] else None

    rec = wait_for(record, timeout=10, what="the node record to list the running job")
    assert rec["alive"] is True
    assert rec["concurrency"] == 3
    assert rec["address"] and rec["address"].startswith("127.0.0.1:")
    assert rec["version"] and rec["started"] and rec["pid"]
    assert "jgc-gate" in rec["kinds"]
    (tmp_path / "go").touch()
    assert wait_done(client, root)["state"] == "SUCCESS"
    wait_for(lambda: [n["running"] for n in client.nodes()] == [[]], timeout=10,
             what="running list to empty")
