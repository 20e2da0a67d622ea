"""The runtime end to end: in-process Nodes (pykka actors) running trees against the
private redis-server (and a few against fakeredis, the embedded mode): order,
parallelism, failures, aborts, and jobs that do not stop.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.jobs.log import log_path
from tests.helpers import wait_for

# rec: an autouse fixture, imported so that it applies here.
from tests.runtime_helpers import (  # noqa: F401
    REC,
    check_leaf_first,
    flat,
    live_in_group,
    log_lines,
    rec,
    state_of,
    step,
    submit,
    walk,
)


# -- order and parallelism ---------------------------------------------------------------
def test_leaf_first_and_siblings_in_parallel(backend: Any, nodes: Any) -> None:
    nodes("n1", backend)
    client = Client(backend)
    gate = uuid.uuid4().hex
    root, ids = submit(client, step("root", step("a", step("a1", gate=gate),
                                                 step("a2", gate=gate)),
                                    step("b", gate=gate)))
    leaves = {ids["a1"], ids["a2"], ids["b"]}
    # All three leaves run at the same time, held at the gate ...
    wait_for(lambda: REC.now_running() == leaves, timeout=5, what="the three leaves running")
    jobs = flat(client, root)
    assert {t: jobs[t]["state"] for t in jobs} == {"root": "NEW", "a": "NEW", "a1": "RUNNING",
                                                   "a2": "RUNNING", "b": "RUNNING"}
    assert not REC.ended
    REC.open(gate)
    status = client.wait(root, timeout=10)
    assert status["state"] == "SUCCESS"
    # ... each started before any of them ended (they overlapped).
    assert max(REC.started[i] for i in leaves) < min(REC.ended[i] for i in leaves)
    check_leaf_first(client, root)
    assert REC.started[ids["root"]] > REC.ended[ids["a"]]


SHAPES = {
    "chain": step("l0", step("l1", step("l2", step("l3", step("l4", step("l5", step("l6"))))))),
    "wide": step("root", *(step(f"c{i}") for i in range(30))),
    "unbalanced": step("root", step("x"),
                       step("y", step("z", step("z1"), step("z2", step("z21", step("z211"))))),
                       step("w", step("w1"), step("w2"), step("w3"))),
    "two-level": step("root", *(step(f"m{m}", *(step(f"m{m}.{k}") for k in range(4)))
                                for m in range(4))),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_parent_only_after_all_children_succeed(redis_url: str, nodes: Any, shape: str) -> None:
    nodes("n1", redis_url, concurrency=4)
    client = Client(redis_url)
    root, ids = submit(client, SHAPES[shape])
    status = client.wait(root, timeout=10)
    assert status["state"] == "SUCCESS"
    assert set(REC.started) == set(ids.values()) == set(REC.ended)
    check_leaf_first(client, root)
    assert REC.max_running["n1"] <= 4


def test_jobs_on_two_nodes(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url)
    nodes("n2", redis_url)
    client = Client(redis_url)
    root, _ = submit(client, step("root", step("a", step("a1", node="n2"), step("a2")),
                                    step("b", *[step(f"b{i}") for i in range(3)], node="n2")))
    assert client.wait(root, timeout=10)["state"] == "SUCCESS"
    check_leaf_first(client, root)
    jobs = flat(client, root)
    assert {t for t, j in jobs.items() if j["node"] == "n2"} == {"a1", "b", "b0", "b1", "b2"}
    # Each job ran on the node it was assigned to.
    assert REC.node_of == {j["id"]: j["node"] for j in jobs.values()}


# -- failure and aborts --------------------------------------------------------------
def test_failing_leaf_aborts_the_tree(backend: Any, nodes: Any) -> None:
    nodes("n1", backend, concurrency=2)
    client = Client(backend)
    hold, trigger = uuid.uuid4().hex, uuid.uuid4().hex
    root, ids = submit(client, step("root", step("mid", step("A", gate=hold),
                                                 step("F", gate=trigger, fail=True)),
                                    step("X"), step("Y")))
    wait_for(lambda: REC.now_running() == {ids["A"], ids["F"]}, timeout=5,
             what="A and F running")
    jobs = flat(client, root)
    assert (jobs["X"]["state"], jobs["Y"]["state"]) == ("WAITING", "WAITING")  # no slot
    REC.open(trigger)  # F fails now
    status = client.wait(root, timeout=10)
    jobs = {j["title"]: j for j in walk(status)}
    failed = ids["F"]
    assert (jobs["F"]["state"], jobs["F"]["cause"]) == ("FAILED", None)
    assert "failed on purpose" in jobs["F"]["summary"]
    for title in ("root", "mid", "A", "X", "Y"):
        assert (jobs[title]["state"], jobs[title]["cause"]) == ("ABORTED", failed), title
    # The running sibling was asked to stop and did; the waiting ones never started.
    assert ids["A"] in REC.aborted
    assert set(REC.started) == {ids["A"], ids["F"]}
    for title in ("root", "mid", "X", "Y"):
        assert jobs[title]["started"] is None
    assert status["state"] == "ABORTED"


def test_failure_aborts_running_jobs_on_another_node(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url)
    nodes("n2", redis_url)
    client = Client(redis_url)
    hold, trigger = uuid.uuid4().hex, uuid.uuid4().hex
    root, ids = submit(client, step("root", step("A", gate=hold, node="n2"),
                                    step("B", gate=hold, node="n2"),
                                    step("F", gate=trigger, fail=True)))
    wait_for(lambda: REC.now_running("n2") == {ids["A"], ids["B"]} and REC.now_running("n1")
             == {ids["F"]}, timeout=5, what="all three running")
    REC.open(trigger)
    jobs = {j["title"]: j for j in walk(client.wait(root, timeout=10))}
    for title in ("A", "B", "root"):
        assert (jobs[title]["state"], jobs[title]["cause"]) == ("ABORTED", ids["F"])
    assert {ids["A"], ids["B"]} <= REC.aborted


USER_ABORTS = ["running", "waiting", "root", "parent"]


@pytest.mark.parametrize("target", USER_ABORTS)
def test_user_abort(redis_url: str, nodes: Any, target: str) -> None:
    nodes("n1", redis_url, concurrency=2)
    client = Client(redis_url)
    gate = uuid.uuid4().hex
    root, ids = submit(client, step("root", step("mid", step("A", gate=gate),
                                                 step("B", gate=gate)),
                                    step("W")))
    wait_for(lambda: REC.now_running() == {ids["A"], ids["B"]}, timeout=5,
             what="A and B running")
    assert state_of(client, ids["W"]) == "WAITING"
    victim = {"running": ids["A"], "waiting": ids["W"], "root": ids["root"],
              "parent": ids["mid"]}[target]
    outcome = client.abort(victim)
    assert outcome.verdict == "ok"
    assert outcome.state == ("RUNNING" if target == "running" else "ABORTED")
    status = client.wait(root, timeout=10)
    jobs = {j["title"]: j for j in walk(status)}
    for title, job in jobs.items():
        assert (job["state"], job["cause"]) == ("ABORTED", victim), title
    assert {ids["A"], ids["B"]} == REC.aborted  # both running jobs were stopped
    assert set(REC.started) == {ids["A"], ids["B"]}  # nothing else started
    assert jobs["W"]["started"] is None
    # Aborting again changes nothing.
    again = client.abort(victim)
    assert (again.verdict, again.state) == ("finished", "ABORTED")
    assert client.status(root) == status


def test_abort_of_a_finished_tree_changes_nothing(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url)
    client = Client(redis_url)
    root, ids = submit(client, step("root", step("a")))
    status = client.wait(root, timeout=10)
    assert status["state"] == "SUCCESS"
    for job_id in ids.values():
        outcome = client.abort(job_id)
        assert (outcome.verdict, outcome.state) == ("finished", "SUCCESS")
    assert client.status(root) == status


# -- stopping what does not stop -----------------------------------------------------
def test_shell_ignoring_sigterm_is_killed_after_grace(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    command = "trap '' TERM; echo \"pid $$\"; echo ready; while :; do sleep 0.05; done"
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "shell", "params": {"command": command, "grace": 0.6}}]})
    job_id = client.status(root)["children"][0]["id"]
    path = log_path(node.log_dir, job_id)
    wait_for(lambda: "ready" in log_lines(path), timeout=5, what="the shell job running")
    pid = int(next(line for line in log_lines(path) if line.startswith("pid "))[4:])
    assert pid in live_in_group(pid)  # its own process group, alive
    asked = time.time()
    client.abort(job_id)
    client.wait(root, timeout=10)
    job = client.job(job_id)
    assert (job["state"], job["cause"]) == ("ABORTED", job_id)
    # Killed once the grace was over (the SIGTERM alone did nothing), well before the
    # node's own fence (abort_grace 3 s, or grace + 2 s).
    assert 0.6 <= job["finished"] - asked < 2.9
    text = path.read_text()
    assert "sending SIGKILL" in text
    assert "exit code -9" in job["summary"]

    def group_gone() -> bool:
        """No live process left in the shell's process group (zombies waiting for
        their reaper do not count)."""
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        return not live_in_group(pid)

    wait_for(group_gone, timeout=5, what="the shell's process group gone")


def test_shell_stops_on_sigterm_without_waiting_for_grace(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "shell", "params": {"command": "echo ready; exec sleep 30", "grace": 5}}]})
    job_id = client.status(root)["children"][0]["id"]
    path = log_path(node.log_dir, job_id)
    wait_for(lambda: "ready" in log_lines(path), timeout=5, what="the shell job running")
    asked = time.time()
    client.abort(root)
    client.wait(root, timeout=10)
    job = client.job(job_id)
    assert (job["state"], job["cause"]) == ("ABORTED", root)
    assert job["finished"] - asked < 2.0
    assert "sending SIGKILL" not in path.read_text()


def test_python_job_ignoring_abort_is_fenced(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url, abort_grace=0.4, concurrency=1)
    client = Client(redis_url)
    gate = uuid.uuid4().hex
    root, ids = submit(client, step("root", step("S", kind="jgt-stubborn", gate=gate)))
    stubborn = ids["S"]
    wait_for(lambda: stubborn in REC.started, timeout=5, what="the stubborn job running")
    asked = time.time()
    client.abort(root)
    client.wait(root, timeout=10)
    fenced = client.job(stubborn)
    assert (fenced["state"], fenced["cause"]) == ("ABORTED", root)
    assert "did not stop" in fenced["summary"]
    assert fenced["finished"] - asked >= 0.4
    assert stubborn not in REC.ended  # its code is still running
    # The fenced job does not hold the node's only slot.
    other, _ = submit(client, step("meanwhile"))
    assert client.wait(other, timeout=10)["state"] == "SUCCESS"
    # Now its code returns: the late result changes nothing.
    REC.open(gate)
    path = log_path(node.log_dir, stubborn)
    wait_for(lambda: "job ended: ok" in path.read_text(), timeout=5,
             what="the stubborn job's late return")
    # The node goes on working (and has processed the late outcome by then).
    other, _ = submit(client, step("next"))
    assert client.wait(other, timeout=10)["state"] == "SUCCESS"
    assert node.running() == 0
    assert client.job(stubborn) == fenced
    assert client.store.results(root, [stubborn]) == {}


def test_abort_hook_of_a_running_job_is_called(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url, abort_grace=5.0)
    client = Client(redis_url)
    root, ids = submit(client, step("root", step("H", kind="jgt-hooked",
                                                 gate=uuid.uuid4().hex)))
    wait_for(lambda: ids["H"] in REC.started, timeout=5, what="H running")
    asked = time.time()
    client.abort(root)
    job = client.wait(root, timeout=10)["children"][0]
    assert REC.aborted == {ids["H"]}
    assert (job["state"], job["cause"]) == ("ABORTED", root)
    assert "stopped by the abort hook" in job["summary"]
    assert job["finished"] - asked < 2.0  # stopped by the hook, not fenced


def test_result_that_is_not_json_fails_the_job(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url)
    client = Client(redis_url)
    root, ids = submit(client, step("root", step("bad", kind="jgt-bad-result")))
    status = client.wait(root, timeout=10)
    jobs = {j["title"]: j for j in walk(status)}
    assert jobs["bad"]["state"] == "FAILED"
    assert "JSON" in jobs["bad"]["summary"]
    assert (jobs["root"]["state"], jobs["root"]["cause"]) == ("ABORTED", ids["bad"])
