"""The tree supervisor on its own: outcomes reach the node exactly once, whatever the
interleaving with its timer ticks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from jobgrove.actors.base import Actor
from jobgrove.actors.job_actor import JobActor
from jobgrove.actors.messages import JobDone, StartJobs, Tick
from jobgrove.actors.supervisor import TreeSupervisor
from jobgrove.errors import JobFailedError
from jobgrove.jobs.api import Job, JobContext, job_kind
from jobgrove.messaging.connection import fake_client, fake_server
from jobgrove.messaging.records import Claim
from jobgrove.messaging.store import Store
from tests.helpers import wait_for

RELEASE = threading.Event()


@job_kind("test-sup-gate")
class Gate(Job):
    """Waits for RELEASE, then fails or succeeds as its params say."""

    def run(self, ctx: JobContext) -> Any:
        RELEASE.wait(10)
        if ctx.params.get("fail"):
            raise JobFailedError("failed at the gate")
        return {"ok": True}


class Recorder(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        self.seen.append(message)
        return None


@pytest.mark.parametrize("fail", [True, False])
def test_outcome_reaches_the_node_once_despite_ticks(fail: bool, log_dir: str) -> None:
    RELEASE.clear()
    node = Recorder.start()
    store = Store(fake_client(fake_server()))
    root = str(uuid.uuid4())
    supervisor = TreeSupervisor.start(node, store, root, "n1", log_dir, 5.0, None)
    runners = [JobActor.start() for _ in range(3)]
    try:
        claims = tuple(Claim(root, str(uuid.uuid4()), f"t{i}", {
            "kind": "test-sup-gate", "params": {"fail": fail and i == 0}, "children": []},
            {}, {}) for i in range(3))
        supervisor.tell(StartJobs(claims, tuple(runners)))
        stop_ticking = threading.Event()

        def tick() -> None:  # ticks as fast as they go, to hit every interleaving
            while not stop_ticking.is_set():
                supervisor.tell(Tick())

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        RELEASE.set()
        recorder = node.proxy()

        def done() -> list[JobDone]:
            return [m for m in recorder.seen.get(timeout=5) if isinstance(m, JobDone)]

        if fail:
            # The failure reaches the node; the siblings were asked to abort, yet they
            # finished their run anyway (the gate ignores aborts): 3 outcomes in all.
            wait_for(lambda: len(done()) == 3, timeout=10, what="three outcomes")
            failed = [m for m in done() if not m.ok]
            assert [m.job_id for m in failed] == [claims[0].id]
        else:
            wait_for(lambda: len(done()) == 3, timeout=10, what="three outcomes")
            assert all(m.ok for m in done())
        stop_ticking.set()
        ticker.join(5)
        assert len({m.job_id for m in done()}) == 3
    finally:
        RELEASE.set()
        supervisor.stop(timeout=5)
        for runner in runners:
            runner.stop(timeout=5)
        node.stop(timeout=5)
    assert not supervisor.is_alive()
