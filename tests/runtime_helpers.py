"""Instrumented job kinds and helpers for the in-process runtime tests.

Jobs of these kinds record when they start and end, and can be held at a "gate" (an
Event the test opens), so tests observe order and overlap directly instead of
guessing with sleeps. ``rec`` (autouse where imported) resets the recorder per test.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client, Job, JobAbortedError, JobContext, JobFailedError, job_kind

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


# -- instrumentation -----------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A clean record for the next test (job kinds hold this one object)."""
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
    REC.reset()
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
