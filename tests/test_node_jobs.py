"""The runtime end to end, continued: undo hooks, results and context, concurrency,
job logs, the built-in kinds, and aborts under load.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.jobs.log import log_path
from tests.helpers import wait_for

# rec: an autouse fixture, imported so that it applies here.
from tests.runtime_helpers import (  # noqa: F401
    REC,
    STAMP,
    flat,
    rec,
    state_of,
    step,
    submit,
    walk,
)


# -- undo, results, context -------------------------------------------------------------
def test_undo_hook_runs_once_for_succeeded_jobs(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url, reconcile_interval=0.1)
    nodes("n2", redis_url, reconcile_interval=0.1)
    client = Client(redis_url)
    hold, trigger = uuid.uuid4().hex, uuid.uuid4().hex
    root, ids = submit(client, step(
        "root",
        step("U1", kind="jgt-undo", result={"made": "u1"}),
        step("U2", kind="jgt-undo", node="n2", result=["u2"]),
        step("R", kind="jgt-undo", gate=hold),  # running at the abort: no undo
        step("F", kind="jgt-undo", gate=trigger, fail=True),
        step("P", step("PC", gate=hold), kind="jgt-undo"),  # never started: no undo
        kind="jgt-undo"))
    wait_for(lambda: state_of(client, ids["U1"]) == state_of(client, ids["U2"]) == "SUCCESS",
             timeout=5, what="U1 and U2 succeeded")
    REC.open(trigger)
    assert client.wait(root, timeout=10)["state"] == "ABORTED"
    wait_for(lambda: len(REC.undone) >= 2, timeout=5, what="undo hooks")
    # Once both nodes are done with the tree, nothing more can run for it.
    wait_for(lambda: root not in client.store.node_trees("n1")
             and root not in client.store.node_trees("n2"), timeout=5,
             what="nodes done with the tree")
    assert sorted(REC.undone, key=str) == sorted(
        [(ids["U1"], {"made": "u1"}), (ids["U2"], ["u2"])], key=str)
    jobs = flat(client, root)
    assert jobs["U1"]["state"] == jobs["U2"]["state"] == "SUCCESS"  # finished: unchanged
    assert jobs["F"]["state"] == "FAILED"
    for title in ("root", "R", "P", "PC"):
        assert (jobs[title]["state"], jobs[title]["cause"]) == ("ABORTED", ids["F"])


def test_undo_hook_runs_when_the_node_was_down_during_the_abort(redis_url: str,
                                                                nodes: Any) -> None:
    """U succeeded on n1; n1 is stopped; the tree aborts (F fails on n2) and so is
    finished at once, before n1 is back. When n1 starts again, U's undo must run."""
    n1 = nodes("n1", redis_url, reconcile_interval=0.1)
    nodes("n2", redis_url, reconcile_interval=0.1)
    client = Client(redis_url)
    trigger = uuid.uuid4().hex
    root, ids = submit(client, step("root", step("U", kind="jgt-undo", result={"u": 1}),
                                    step("F", node="n2", gate=trigger, fail=True)))
    wait_for(lambda: state_of(client, ids["U"]) == "SUCCESS", timeout=5, what="U succeeded")
    n1.stop()
    REC.open(trigger)
    assert client.wait(root, timeout=10)["state"] == "ABORTED"
    nodes("n1", redis_url, reconcile_interval=0.1)
    wait_for(lambda: REC.undone, timeout=3, what="the undo hook of U")
    assert REC.undone == [(ids["U"], {"u": 1})]


def test_results_and_context_reach_the_parent(backend: Any, nodes: Any) -> None:
    nodes("n1", backend)
    client = Client(backend)
    root, ids = submit(client, step(
        "root",
        step("c1", result=1, set={"a": 1}),
        step("c2", step("g", result="g", set={"c": [3]}), result={"x": [1, 2]},
             set={"b": "two"}),
        step("c3", result=None),
        step("c4", result=False)))
    assert client.wait(root, timeout=10)["state"] == "SUCCESS"
    seen = REC.seen[ids["root"]]
    assert seen["children"] == [ids["c1"], ids["c2"], ids["c3"], ids["c4"]]
    # Results of direct children only, by id; a None result is no result.
    assert seen["results"] == {ids["c1"]: 1, ids["c2"]: {"x": [1, 2]}, ids["c4"]: False}
    assert seen["context"] == {"a": 1, "b": "two", "c": [3]}
    assert client.context(ids["c1"][:8]) == {"a": 1, "b": "two", "c": [3]}
    assert REC.seen[ids["c2"]]["results"] == {ids["g"]: "g"}
    assert REC.seen[ids["c2"]]["context"]["c"] == [3]  # the grandchild's write
    assert REC.seen[ids["g"]]["results"] == {}


def test_concurrency_limit(redis_url: str, nodes: Any) -> None:
    limit = 3
    node = nodes("n1", redis_url, concurrency=limit)
    client = Client(redis_url)
    gates: dict[str, str] = {}
    roots = []
    for t in range(2):
        specs = [step(f"t{t}.{i}", gate=f"{t}.{i}") for i in range(5)]
        root, ids = submit(client, step(f"root{t}", *specs))
        roots.append(root)
        gates.update({ids[s["title"]]: s["title"].removeprefix("t") for s in specs})
    left = set(gates)
    while left:
        expected = min(limit, len(left))
        running = wait_for(lambda e=expected: len(REC.now_running()) == e
                           and REC.now_running(), timeout=5, what=f"{expected} jobs running")
        stored = sum(job["state"] == "RUNNING" for r in roots for job in walk(client.status(r)))
        assert stored <= limit
        assert node.running() <= limit
        assert REC.max_running["n1"] <= limit
        done = sorted(running)[0]
        REC.open(gates[done])
        wait_for(lambda d=done: d in REC.ended, timeout=5, what="a job ending")
        left.discard(done)
    for root in roots:
        assert client.wait(root, timeout=10)["state"] == "SUCCESS"
    assert REC.max_running["n1"] == limit


# -- logs -----------------------------------------------------------------------------
def test_job_logs(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    command = "printf 'one\\ntwo\\n'; echo three >&2; echo 'four  five'; printf 'no newline'"
    root = client.submit({"kind": "jgt-step", "title": "root", "node": "n1", "children": [
        {"kind": "shell", "title": "sh", "params": {"command": command}}]})
    failing = client.submit({"kind": "shell", "title": "bad", "node": "n1",
                             "params": {"command": ["sh", "-c", "echo oops; exit 3"]}})
    jobs = {j["title"]: j for j in walk(client.wait(root, timeout=10))}
    jobs["bad"] = client.wait(failing, timeout=10)
    assert jobs["bad"]["state"] == "FAILED" and "exit code 3" in jobs["bad"]["summary"]
    assert jobs["sh"]["state"] == jobs["root"]["state"] == "SUCCESS"
    for job in jobs.values():
        path = Path(node.log_dir) / job["id"][:2] / f"{job['id'][2:]}.log"
        assert path == log_path(node.log_dir, job["id"])
        lines = path.read_text().splitlines()
        assert lines, job["title"]
        for line in lines:
            assert STAMP.match(line), line
    sh = [STAMP.sub("", line) for line in
          log_path(node.log_dir, jobs["sh"]["id"]).read_text().splitlines()]
    # stdout and stderr are read from pipes of their own: each stream keeps its order,
    # and stderr lines are marked as such.
    output = [line for line in sh if line in ("one", "two", "four  five", "no newline")]
    assert output == ["one", "two", "four  five", "no newline"]
    assert "[stderr] three" in sh and "three" not in sh
    bad = [STAMP.sub("", line) for line in
           log_path(node.log_dir, jobs["bad"]["id"]).read_text().splitlines()]
    assert "oops" in bad
    assert any("exit code 3" in line for line in bad)


def test_multiline_log_from_job_code(redis_url: str, nodes: Any) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    root, ids = submit(client, step("root"))
    client.wait(root, timeout=10)
    lines = log_path(node.log_dir, ids["root"]).read_text().splitlines()
    assert all(STAMP.match(line) for line in lines)
    bodies = [STAMP.sub("", line) for line in lines]
    assert bodies.index("line one") + 1 == bodies.index("line two")


def test_shell_timeout_fails(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url)
    client = Client(redis_url)
    root = client.submit({"kind": "shell", "node": "n1",
                          "params": {"command": "sleep 30", "timeout": 0.3, "grace": 0}})
    job = client.wait(root, timeout=10)
    assert job["state"] == "FAILED"
    assert "timed out" in job["summary"]


def test_builtin_kinds(redis_url: str, nodes: Any, tmp_path: Path) -> None:
    node = nodes("n1", redis_url)
    client = Client(redis_url)
    failing = client.submit({"kind": "fail", "node": "n1", "params": {"message": "nope"}})
    shell = client.submit({"kind": "shell", "node": "n1", "params": {
        "command": ["sh", "-c", "echo \"FOO=$FOO\"; pwd"], "env": {"FOO": "bar"},
        "cwd": str(tmp_path)}})
    missing = client.submit({"kind": "shell", "node": "n1",
                             "params": {"command": ["/nonexistent/jgt-binary"]}})
    sleeper = client.submit({"kind": "sleep", "node": "n1", "params": {"seconds": 30}})
    job = client.wait(failing, timeout=10)
    assert (job["state"], job["summary"]) == ("FAILED", "nope")
    job = client.wait(shell, timeout=10)
    assert job["state"] == "SUCCESS"
    assert client.job(shell)["result"] == {"exit_code": 0}
    lines = [STAMP.sub("", line) for line in
             log_path(node.log_dir, shell).read_text().splitlines()]
    assert "FOO=bar" in lines and str(tmp_path) in lines
    job = client.wait(missing, timeout=10)
    assert job["state"] == "FAILED" and "cannot start" in job["summary"]
    wait_for(lambda: state_of(client, sleeper) == "RUNNING", timeout=5, what="sleep running")
    asked = time.time()
    client.abort(sleeper)
    job = client.wait(sleeper, timeout=10)
    assert (job["state"], job["cause"]) == ("ABORTED", sleeper)
    assert job["finished"] - asked < 2.0


@pytest.mark.parametrize("seed", [1, 2])
def test_abort_under_load_on_two_nodes(redis_url: str, nodes: Any, seed: int) -> None:
    import random

    from tests.test_races import check_consistent

    rng = random.Random(seed)
    nodes("n1", redis_url, concurrency=3)
    nodes("n2", redis_url, concurrency=3)
    client = Client(redis_url)
    root, ids = submit(client, step("root", *(
        step(f"m{m}", *(step(f"m{m}.{k}", node=rng.choice(["n1", "n2"])) for k in range(6)),
             node=rng.choice(["n1", "n2"])) for m in range(6))))
    wait_for(lambda: len(REC.ended) >= 12, timeout=5, what="a dozen jobs done")
    victim = rng.choice(sorted(ids.values()))
    outcome = client.abort(victim)
    # Started when the abort had just been recorded (a claim is atomic with it).
    started_then = {j["id"] for j in walk(client.status(root)) if j["started"] is not None}
    status = client.wait(root, timeout=10)
    jobs = list(walk(status))
    ran = [j["id"] for j in jobs if j["started"] is not None]
    check_consistent(client.store, root, ran, all_results=False)
    assert set(REC.started) <= set(ran)
    if outcome.verdict == "ok":
        assert status["state"] == "ABORTED"
        cause = client.store.client.hget(client.store.keys.tree_key(root, "meta"),
                                         "abort_cause")
        assert cause == victim
        assert set(ran) == started_then  # nothing started after the abort
    else:
        assert outcome.state == "SUCCESS"
