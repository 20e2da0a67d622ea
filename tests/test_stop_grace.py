"""``Job.stop_grace``: a kind decides how long it may take to stop once asked to abort,
instead of the node's ``--abort-grace``, shorter or longer."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from jobgrove import Client, Job, JobAbortedError, JobContext, job_kind
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)
STARTED: dict[str, threading.Event] = {}


@job_kind("jgt-slow-stopper")
class SlowStopper(Job):
    """Once asked to abort, takes ``params.stops_in`` seconds to stop; its
    ``stop_grace`` is ``params.grace``."""

    def stop_grace(self, ctx: JobContext) -> float:
        return float(ctx.params["grace"])

    def run(self, ctx: JobContext) -> Any:
        STARTED.setdefault(ctx.job_id, threading.Event()).set()
        ctx.abort_event.wait(20)
        time.sleep(float(ctx.params["stops_in"]))
        ctx.log.info("stopped on my own")
        raise JobAbortedError("stopped")


def run_and_abort(client: Client, grace: float, stops_in: float) -> tuple[dict[str, Any],
                                                                          float]:
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "jgt-slow-stopper", "params": {"grace": grace, "stops_in": stops_in}}]})
    job_id = client.status(root)["children"][0]["id"]
    wait_for(lambda: job_id in STARTED and STARTED[job_id].is_set(), timeout=10,
             what="the job running")
    asked = time.time()
    client.abort(job_id)
    client.wait(root, timeout=20)
    return client.job(job_id), asked


def test_a_shorter_grace_fences_the_job_sooner(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url, abort_grace=10.0)
    job, asked = run_and_abort(Client(redis_url), grace=0.3, stops_in=8)
    assert job["state"] == "ABORTED"
    assert "did not stop within 0.3s" in job["summary"], job
    assert job["finished"] - asked < 5  # its own grace, not the node's 10 s


def test_a_longer_grace_lets_the_job_stop_on_its_own(redis_url: str, nodes: Any) -> None:
    nodes("n1", redis_url, abort_grace=0.2)
    job, asked = run_and_abort(Client(redis_url), grace=5.0, stops_in=1.0)
    assert job["state"] == "ABORTED"
    assert "did not stop" not in (job["summary"] or ""), job  # not fenced at 0.2 s
    assert job["finished"] - asked >= 1.0
