"""Node liveness with real node processes: a SIGKILLed node is reaped by exactly one
other node, a restarted node fails what it left running, duplicate names are refused,
jobs for unknown or down nodes, and clear errors at start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from jobgrove import Client
from tests.cluster import (
    LEASE,
    REPO,
    Cluster,
    TreeEvents,
    flat,
    record_of,
    wait_done,
    wait_state,
)
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.redis



def jobgrove_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgrove", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_sigkilled_node_is_reaped_once_and_others_go_on(redis_url: str, cluster: Cluster,
                                                         tmp_path: Path) -> None:
    nodes = cluster.start_many(["k1", "k2", "k3"], redis_url)
    client = Client(redis_url)
    spec = {"kind": "noop", "node": "k1", "title": "root", "children": [
        {"kind": "sleep", "node": "k2", "title": "victim-1", "params": {"seconds": 60}},
        {"kind": "sleep", "node": "k2", "title": "victim-2", "params": {"seconds": 60}},
        {"kind": "sleep", "node": "k1", "title": "other-1", "params": {"seconds": 60}},
        {"kind": "shell", "node": "k3", "title": "other-3", "params": {"command": "sleep 60"}},
        {"kind": "noop", "node": "k3", "title": "later", "children": [
            {"kind": "sleep", "node": "k3", "title": "other-3b", "params": {"seconds": 60}}]},
    ]}
    root = client.submit(spec)
    events = TreeEvents(redis_url, client.keys.tree_channel(root))
    try:
        ids = {j["title"]: j["id"] for j in flat(client, root).values()}
        for title in ("victim-1", "victim-2", "other-1", "other-3", "other-3b"):
            wait_state(client, ids[title], "RUNNING")
        nodes["k2"].kill()
        killed_at = time.time()
        status = wait_done(client, root, timeout=LEASE + 10)
        reaped_after = time.time() - killed_at
        jobs = {j["title"]: j for j in flat(client, root).values()}
        # The lost node's jobs end with a summary saying so: one FAILED (the tree's
        # cause), any other one ABORTED by it.
        victims = [jobs["victim-1"], jobs["victim-2"]]
        for job in victims:
            assert "k2" in job["summary"] and "lost" in job["summary"], job["summary"]
        failed = [j for j in victims if j["state"] == "FAILED"]
        assert len(failed) == 1, victims
        cause = failed[0]["id"]
        for job in victims:
            assert job is failed[0] or (job["state"] == "ABORTED" and job["cause"] == cause)
        for title in ("other-1", "other-3", "other-3b", "later", "root"):
            assert jobs[title]["state"] == "ABORTED", jobs[title]
            assert jobs[title]["cause"] == cause
        assert status["state"] == "ABORTED"
        print(f"SIGKILLed node with lease {LEASE}s: tree done {reaped_after:.2f}s after the kill")
        assert reaped_after < LEASE + 6

        # Exactly one set of abort events, one terminal status per job.
        time.sleep(0.3)  # let stragglers (a duplicate reap would follow at once) arrive
        events.drain(quiet=0.2)
        assert len(events.of_type("abort")) == 1, events.of_type("abort")
        assert len(events.of_type("done")) == 1
        finals = Counter(m["job"] for m in events.of_type("status")
                         if m["state"] in ("SUCCESS", "FAILED", "ABORTED"))
        assert finals and set(finals.values()) == {1}, finals
        assert set(finals) == set(ids.values())
    finally:
        events.close()

    # Exactly one live node did the reaping.
    reapers = [n.name for n in nodes.values() if "node k2 lost" in n.stderr()]
    assert len(reapers) == 1, reapers
    # The others were not disturbed: alive, and they run a new tree across both.
    assert not nodes["k1"].proc.poll() and not nodes["k3"].proc.poll()
    by_name = {n["name"]: n for n in client.nodes()}
    assert by_name["k2"]["alive"] is False and by_name["k2"]["running"] == []
    assert by_name["k1"]["alive"] and by_name["k3"]["alive"]
    after = client.submit({"kind": "noop", "node": "k1", "children": [
        {"kind": "noop", "node": "k3"}, {"kind": "sleep", "node": "k1",
                                         "params": {"seconds": 0.01}}]})
    assert wait_done(client, after)["state"] == "SUCCESS"


def test_node_restarted_under_its_name_fails_what_it_left_running(redis_url: str,
                                                                    cluster: Cluster) -> None:
    # A single node: nobody else could reap it; its own restart must.
    node = cluster.start("solo", redis_url, lease=30.0)
    client = Client(redis_url)
    root = client.submit({"kind": "noop", "node": "solo", "children": [
        {"kind": "sleep", "node": "solo", "params": {"seconds": 60}}]})
    child = next(j["id"] for j in flat(client, root).values() if j["id"] != root)
    wait_state(client, child, "RUNNING")
    node.kill()
    # Restarted at once (its lease of 30 s still held by the dead process, on this host).
    again = cluster.start("solo", redis_url, lease=30.0)
    status = wait_done(client, root, timeout=10)
    job = client.job(child)
    assert job["state"] == "FAILED", job
    assert "restarted" in job["summary"], job["summary"]
    assert status["state"] == "ABORTED"
    # Logged right after the reap that the states above already show: wait for it.
    wait_for(lambda: "left RUNNING by a previous process" in again.stderr(), timeout=5,
             what="the restarted node to report what it failed")
    ok = client.submit({"kind": "noop", "node": "solo"})
    assert wait_done(client, ok)["state"] == "SUCCESS"


def test_duplicate_node_name_is_refused(redis_url: str, cluster: Cluster) -> None:
    first = cluster.start("dup", redis_url)
    second = cluster.spawn("dup", redis_url)
    rc = second.wait(timeout=30)
    err = second.stderr()
    assert rc != 0
    assert rc == 2, (rc, err)
    assert "'dup'" in err and "already held" in err and str(first.pid) in err, err
    assert "Traceback" not in err
    # The first one is untouched.
    assert first.running
    client = Client(redis_url)
    record = record_of(client, "dup")
    assert record is not None and record["alive"] and record["pid"] == first.pid
    root = client.submit({"kind": "noop", "node": "dup"})
    assert wait_done(client, root)["state"] == "SUCCESS"


def test_submit_to_unknown_node(redis_url: str, cluster: Cluster, tmp_path: Path) -> None:
    cluster.start("known", redis_url)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "noop", "node": "known", "children": [
        {"kind": "noop", "node": "ghost"}]}))
    result = jobgrove_cli("submit", str(spec), "--redis", redis_url)
    assert result.returncode == 2, result
    assert "ghost" in result.stderr and "--allow-unknown-node" in result.stderr
    assert "Traceback" not in result.stderr
    client = Client(redis_url)
    assert client.list().trees == []  # nothing stored

    result = jobgrove_cli("submit", str(spec), "--redis", redis_url, "--allow-unknown-node")
    assert result.returncode == 0, result
    root = result.stdout.strip()
    ghost_job = next(j["id"] for j in flat(client, root).values() if j["node"] == "ghost")
    assert client.job(ghost_job)["state"] == "WAITING"
    # The job waits for its node; once a node of that name starts, it runs.
    ghost = cluster.start("ghost", redis_url)
    assert wait_done(client, root)["state"] == "SUCCESS"
    assert ghost.log_file(ghost_job).exists()


def test_job_for_a_registered_node_that_is_down_waits_for_it(redis_url: str,
                                                              cluster: Cluster) -> None:
    nodes = cluster.start_many(["up", "down"], redis_url)
    assert nodes["down"].stop() == 0  # a graceful stop gives the name back
    client = Client(redis_url)
    wait_for(lambda: record_of(client, "down")["alive"] is False, timeout=10,
             what="'down' to be listed as not alive")
    root = client.submit({"kind": "noop", "node": "up", "children": [
        {"kind": "noop", "node": "up", "title": "on-up"},
        {"kind": "sleep", "node": "down", "title": "on-down", "params": {"seconds": 0.05}}]})
    jobs = {j["title"]: j["id"] for j in flat(client, root).values()}
    wait_state(client, jobs["on-up"], "SUCCESS")
    time.sleep(LEASE)  # an observation window: nothing runs the job meanwhile
    assert client.job(jobs["on-down"])["state"] == "WAITING"
    assert client.job(root)["state"] == "NEW"
    back = cluster.start("down", redis_url)
    status = wait_done(client, root)
    assert status["state"] == "SUCCESS"
    assert back.log_file(jobs["on-down"]).exists()
    assert client.job(jobs["on-down"])["node"] == "down"


def test_unreachable_redis_at_node_start(cluster: Cluster) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    node = cluster.spawn("lonely", url)
    rc = node.wait(timeout=30)
    err = node.stderr()
    assert rc == 3, (rc, err)
    assert "Redis unavailable" in err and url in err, err
    assert "Traceback" not in err


def test_graceful_stop_lets_running_jobs_finish(redis_url: str, cluster: Cluster,
                                                tmp_path: Path) -> None:
    node = cluster.start("g1", redis_url)
    client = Client(redis_url)
    root = client.submit({"kind": "noop", "node": "g1", "children": [
        {"kind": "jgc-gate", "node": "g1", "params": {"path": str(tmp_path / "go")}}]})
    child = next(j["id"] for j in flat(client, root).values() if j["id"] != root)
    wait_state(client, child, "RUNNING")
    node.signal(15)
    wait_for(lambda: "stopping gracefully" in node.stderr(), timeout=10, what="drain")
    assert node.running
    (tmp_path / "go").touch()
    assert node.wait(timeout=15) == 0
    # Its last job was recorded; the parent (not started, node draining) waits for it.
    assert client.job(child)["state"] == "SUCCESS"
    assert client.job(root)["state"] == "WAITING"
    assert record_of(client, "g1")["alive"] is False
    cluster.start("g1", redis_url)
    assert wait_done(client, root)["state"] == "SUCCESS"



def test_frozen_node_is_reaped_and_rejoins_when_it_thaws(redis_url: str, cluster: Cluster,
                                                         tmp_path: Path) -> None:
    nodes = cluster.start_many(["hot", "cold"], redis_url)
    client = Client(redis_url)
    go = tmp_path / "go"
    root = client.submit({"kind": "noop", "node": "hot", "children": [
        {"kind": "jgc-gate", "node": "cold", "title": "frozen", "params": {"path": str(go)}},
        {"kind": "jgc-gate", "node": "hot", "title": "warm", "params": {"path": str(go)}}]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    wait_state(client, ids["frozen"], "RUNNING")
    wait_state(client, ids["warm"], "RUNNING")
    wait_for(lambda: "waiting for" in read(nodes["cold"].log_file(ids["frozen"])), timeout=10,
             what="the job's code to run")
    nodes["cold"].signal(signal.SIGSTOP)
    try:
        status = wait_done(client, root, timeout=LEASE + 10)
    finally:
        nodes["cold"].signal(signal.SIGCONT)
    jobs = {j["title"]: j for j in flat(client, root).values()}
    assert jobs["frozen"]["state"] == "FAILED" and "lost" in jobs["frozen"]["summary"]
    assert jobs["warm"]["state"] == "ABORTED"
    assert status["state"] == "ABORTED"
    # Thawed, the node learns that its job's tree aborted (its late outcome changes
    # nothing), takes its lease back and runs new work.
    wait_for(lambda: "abort requested" in read(nodes["cold"].log_file(ids["frozen"])),
             timeout=10, what="the thawed node to abort its job")
    wait_for(lambda: record_of(client, "cold")["alive"], timeout=10, what="lease retaken")
    assert client.job(ids["frozen"])["state"] == "FAILED"
    again = client.submit({"kind": "noop", "node": "cold"})
    assert wait_done(client, again)["state"] == "SUCCESS"
    wait_for(lambda: not record_of(client, "cold").get("reaped"), timeout=10,
             what="the 'reaped' mark to go once the node heartbeats again")


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
