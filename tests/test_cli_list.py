"""``list`` with each tree's state derived from all of its jobs, counts per state and
duration, ``--state`` and ``--runs-on``; submit checking kinds against the node a job
is assigned to; and jobs blocked on a node that is not up said so by ``status`` and
``list``. Real node processes, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jobgrove import Client
from jobgrove.core.status import tally, tree_state
from tests.cli_helpers import run, write_spec
from tests.cluster import record_of, wait_done, wait_state
from tests.helpers import wait_for


def listed(redis_url: str, *args: str) -> list[dict[str, Any]]:
    result = run("list", "--json", *args, redis=redis_url)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_tree_state_rule() -> None:
    assert tree_state("NEW", tally(["NEW", "RUNNING", "SUCCESS"])) == "RUNNING"
    assert tree_state("NEW", tally(["NEW", "WAITING"])) == "WAITING"
    assert tree_state("ABORTED", tally(["ABORTED", "RUNNING"])) == "RUNNING"  # stopping
    assert tree_state("FAILED", tally(["FAILED", "ABORTED"])) == "FAILED"
    assert tree_state("SUCCESS", tally(["SUCCESS"] * 3)) == "SUCCESS"
    assert tally(["NEW", "NEW", "RUNNING"]) == {
        "total": 3, "NEW": 2, "WAITING": 0, "RUNNING": 1, "SUCCESS": 0, "FAILED": 0,
        "ABORTED": 0}


def test_list_shows_the_derived_state_counts_and_filters(cluster: Any, redis_url: str,
                                                         tmp_path: Path) -> None:
    cluster.start_many(["l1", "l2"], redis_url)
    client = Client(redis_url)
    gate = tmp_path / "gate"
    running = client.submit({"title": "busy", "kind": "noop", "node": "l1", "children": [
        {"kind": "jgc-gate", "node": "l2", "params": {"path": str(gate)}},
        {"kind": "noop"}]})
    done = client.submit({"title": "quick", "kind": "noop", "node": "l1",
                          "tags": {"node": "l2"}})
    wait_done(client, done)
    gate_job = client.status(running)["children"][0]["id"]
    wait_state(client, gate_job, "RUNNING")
    wait_for(lambda: client.status(running)["children"][1]["state"] == "SUCCESS",
             timeout=10, what="the other child to succeed")

    trees = {t["id"]: t for t in listed(redis_url)}
    busy = trees[running]
    assert busy["state"] == "NEW"  # the root itself waits for its children...
    assert busy["tree_state"] == "RUNNING"  # ...while the tree runs
    assert busy["counts"] == {"total": 3, "NEW": 1, "WAITING": 0, "RUNNING": 1,
                              "SUCCESS": 1, "FAILED": 0, "ABORTED": 0}
    assert busy["duration"] > 0 and "children" not in busy
    assert trees[done]["tree_state"] == "SUCCESS"
    assert trees[done]["counts"]["total"] == trees[done]["counts"]["SUCCESS"] == 1

    text = run("list", redis=redis_url)
    (line,) = [x for x in text.stdout.splitlines() if x.startswith(running)]
    assert "RUNNING" in line and "1/3 ok, 1 new, 1 running" in line, line

    assert [t["id"] for t in listed(redis_url, "--state", "RUNNING")] == [running]
    assert [t["id"] for t in listed(redis_url, "--state", "success")] == [done]
    assert listed(redis_url, "--state", "FAILED") == []
    bad = run("list", "--state", "BUSY", redis=redis_url)
    assert bad.returncode == 2 and "not a state" in bad.stderr

    # --runs-on: any job assigned to the node; --node: the root's *tag*.
    assert [t["id"] for t in listed(redis_url, "--runs-on", "l2")] == [running]
    assert [t["id"] for t in listed(redis_url, "--runs-on", "l1")] == [done, running]
    assert [t["id"] for t in listed(redis_url, "--node", "l2")] == [done]
    assert listed(redis_url, "--runs-on", "l2", "--state", "SUCCESS") == []
    shown = " ".join(run("list", "--help").stdout.split())
    assert "root is *tagged* node=N" in shown and "the root's state" in shown

    gate.touch()
    wait_done(client, running)
    trees = {t["id"]: t for t in listed(redis_url, "--runs-on", "l2")}
    assert trees[running]["tree_state"] == "SUCCESS"
    assert trees[running]["counts"]["SUCCESS"] == 3


def test_submit_checks_kinds_against_the_target_node(cluster: Any, redis_url: str,
                                                     tmp_path: Path) -> None:
    # k1 imports the test kinds (jgc-gate), k2 only has the built-in ones.
    cluster.start("k1", redis_url)
    cluster.start("k2", redis_url, imports=())
    assert "jgc-gate" not in record_of(Client(redis_url), "k2")["kinds"]
    gate = {"kind": "jgc-gate", "params": {"path": str(tmp_path / "g")}}
    bad = write_spec(tmp_path, {"kind": "noop", "node": "k1",
                                "children": [{**gate, "node": "k2"}]})
    result = run("submit", bad, redis=redis_url)
    assert result.returncode == 2, result.stderr
    assert "root.children[0].kind: kind 'jgc-gate' is not known to node k2" in result.stderr
    assert "--import" in result.stderr
    assert Client(redis_url).list().trees == []  # nothing stored
    good = write_spec(tmp_path, {"kind": "noop", "node": "k2",
                                 "children": [{**gate, "node": "k1"}]}, "good.json")
    result = run("submit", good, redis=redis_url)
    assert result.returncode == 0, result.stderr


def test_jobs_blocked_on_a_node_say_why(cluster: Any, redis_url: str,
                                        tmp_path: Path) -> None:
    client = Client(redis_url)
    gone = cluster.start("gone", redis_url)
    stopped = cluster.start("stopped", redis_url)
    assert stopped.stop() == 0
    gone.kill()  # its lease (1.5 s) lapses: lost
    wait_for(lambda: not record_of(client, "gone")["alive"], timeout=10,
             what="the killed node's lease to expire")
    cluster.start("w1", redis_url)
    ids = {}
    for node in ("ghost", "gone", "stopped"):
        spec = write_spec(tmp_path, {"title": f"for {node}", "kind": "noop", "node": "w1",
                                     "children": [{"kind": "noop", "node": node}]},
                          f"{node}.json")
        refused = run("submit", spec, redis=redis_url)
        if node == "ghost":
            assert refused.returncode == 2 and "--allow-unknown-node" in refused.stderr
        result = run("submit", spec, "--allow-unknown-node", redis=redis_url)
        assert result.returncode == 0, result.stderr
        ids[node] = result.stdout.split()[0]
    why = {"ghost": "not registered", "gone": "lost", "stopped": "stopped"}
    for node, root in ids.items():
        status = run("status", root, redis=redis_url)
        assert status.returncode == 0, status.stderr
        assert f"waiting for node {node} ({why[node]})" in status.stdout, status.stdout
    trees = {t["id"]: t for t in listed(redis_url)}
    for node, root in ids.items():
        assert trees[root]["tree_state"] == "WAITING"
        assert trees[root]["waiting_for"] == {node: why[node]}
    lines = run("list", redis=redis_url).stdout.splitlines()
    for node, root in ids.items():
        (line,) = [x for x in lines if x.startswith(root)]
        assert f"waiting for node {node} ({why[node]})" in line
    nodes = {n["name"]: n for n in json.loads(run("nodes", "--json",
                                                  redis=redis_url).stdout)}
    assert {n: nodes[n]["state"] for n in ("gone", "stopped", "w1")} == {
        "gone": "lost", "stopped": "stopped", "w1": "up"}
