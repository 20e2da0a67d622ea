"""The runtime end to end: in-process Nodes (pykka actors) running trees against the
private redis-server (and a few against fakeredis, the embedded mode).

Jobs of the test kinds below record when they start and end, and can be held at a
"gate" (an Event the test opens), so the tests observe order and overlap directly
instead of guessing with sleeps.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client, Job, JobAbortedError, JobContext, JobFailedError, job_kind
from jobgrove.joblog import log_path
from tests.helpers import wait_for

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


# -- instrumentation -----------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = itertools.count()
        self.started: dict[str, int] = {}
        self.ended: dict[str, int] = {}
        self.aborted: set[str] = set()
        self.node_of: dict[str, str] = {}
        self.starts: list[str] = []
        self.seen: dict[str, dict[str, Any]] = {}
        self.undone: list[tuple[str, Any]] = []
        self.running: dict[str, set[str]] = {}  # node -> running job ids
        self.max_running: dict[str, int] = {}
        self.gates: dict[str, threading.Event] = {}

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def open(self, name: str) -> None:
        self.gate(name).set()

    def start(self, ctx: JobContext) -> None:
        with self.lock:
            self.started[ctx.job_id] = next(self.seq)
            self.starts.append(ctx.job_id)
            self.node_of[ctx.job_id] = ctx.node
            now = self.running.setdefault(ctx.node, set())
            now.add(ctx.job_id)
            self.max_running[ctx.node] = max(self.max_running.get(ctx.node, 0), len(now))

    def end(self, ctx: JobContext) -> None:
        with self.lock:
            self.ended[ctx.job_id] = next(self.seq)
            self.running[ctx.node].discard(ctx.job_id)

    def now_running(self, node: str = "n1") -> set[str]:
        with self.lock:
            return set(self.running.get(node, ()))

    def release_all(self) -> None:
        with self.lock:
            gates = list(self.gates.values())
        for gate in gates:
            gate.set()


REC = Recorder()


@pytest.fixture(autouse=True)
def rec() -> Iterator[Recorder]:
    global REC
    REC = Recorder()
    yield REC
    REC.release_all()  # never leave a job thread blocked behind a test
    assert len(REC.starts) == len(set(REC.starts)), "a job's code ran twice"


@job_kind("jgt-step")
class Step(Job):
    """Records start/end; optionally waits at ``gate`` (giving up on abort), writes
    ``set`` into the tree context, fails when ``fail``, returns ``result``."""

    def run(self, ctx: JobContext) -> Any:
        REC.start(ctx)
        try:
            gate = ctx.params.get("gate")
            if gate:
                event = REC.gate(gate)
                while not event.wait(0.01):
                    if ctx.aborted:
                        REC.aborted.add(ctx.job_id)
                        raise JobAbortedError("aborted at the gate")
            for key, value in (ctx.params.get("set") or {}).items():
                ctx.context.set(key, value)
            ctx.log.info("line one\nline two")
            REC.seen[ctx.job_id] = {"results": dict(ctx.results),
                                    "context": ctx.context.as_dict(),
                                    "children": list(ctx.children)}
            if ctx.params.get("fail"):
                raise JobFailedError("failed on purpose")
            return ctx.params.get("result")
        finally:
            REC.end(ctx)


@job_kind("jgt-undo")
class Undoable(Step):
    def on_tree_aborted(self, ctx: JobContext) -> None:
        with REC.lock:
            REC.undone.append((ctx.job_id, ctx.result))


@job_kind("jgt-stubborn")
class Stubborn(Job):
    """Ignores the abort request; returns once its gate opens."""

    def run(self, ctx: JobContext) -> Any:
        REC.start(ctx)
        REC.gate(ctx.params["gate"]).wait(20)
        REC.end(ctx)
        return {"late": True}


@job_kind("jgt-hooked")
class Hooked(Job):
    """Waits at its gate, ignoring the abort event; only its ``abort()`` hook frees it."""

    def run(self, ctx: JobContext) -> Any:
        REC.start(ctx)
        try:
            REC.gate(ctx.params["gate"]).wait(20)
            if ctx.job_id in REC.aborted:
                raise JobAbortedError("stopped by the abort hook")
            return "done"
        finally:
            REC.end(ctx)

    def abort(self, ctx: JobContext) -> None:
        with REC.lock:
            REC.aborted.add(ctx.job_id)
        REC.open(ctx.params["gate"])


@job_kind("jgt-bad-result")
class BadResult(Job):
    def run(self, ctx: JobContext) -> Any:
        return {"a set": {1, 2}}


# -- helpers -----------------------------------------------------------------------
def step(title: str, *children: dict[str, Any], kind: str = "jgt-step",
         node: str | None = None, **params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": kind, "title": title, "params": params}
    if children:
        spec["children"] = list(children)
    if node:
        spec["node"] = node
    return spec


def submit(client: Client, spec: dict[str, Any], node: str = "n1") -> tuple[str, dict[str, str]]:
    """Submit; returns the root id and title -> job id."""
    root = client.submit({**spec, "node": spec.get("node", node)})
    return root, titles(client.status(root))


def titles(status: dict[str, Any]) -> dict[str, str]:
    return {job["title"]: job["id"] for job in walk(status)}


def walk(status: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [status]
    while stack:
        job = stack.pop()
        yield job
        stack.extend(job["children"])


def flat(client: Client, root: str) -> dict[str, dict[str, Any]]:
    """title -> status object."""
    return {job["title"]: job for job in walk(client.status(root))}


def check_leaf_first(client: Client, root: str) -> None:
    """Every parent started after each of its children ended (recorded and stored)."""
    for job in walk(client.status(root)):
        for child in job["children"]:
            assert child["state"] == "SUCCESS"
            assert REC.started[job["id"]] > REC.ended[child["id"]], (job["title"],
                                                                    child["title"])
            assert job["started"] >= child["finished"]


def log_lines(path: Path) -> list[str]:
    """The lines of a job log without their timestamps (all lines must have one)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    return [STAMP.sub("", line) for line in lines]


def live_in_group(pgid: int) -> list[int]:
    """Pids of the non-zombie processes in process group ``pgid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def state_of(client: Client, job_id: str) -> str:
    return client.job(job_id)["state"]


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
    output = [line for line in sh if line in ("one", "two", "three", "four  five", "no newline")]
    assert output == ["one", "two", "three", "four  five", "no newline"]
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
