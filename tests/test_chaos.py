"""Faults mixed together, on real node processes and a real redis-server: corrupt
records, and a chaos run (kill -9 and SIGSTOP of nodes, pub/sub connections killed,
Redis paused). Every tree reaches a consistent final state and no job runs twice."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from tests.cluster import Cluster, flat, record_of, runs, wait_done
from tests.helpers import RedisServer, wait_for

pytestmark = pytest.mark.redis


def check_final(client: Client, root: str) -> dict[str, dict[str, Any]]:
    """The invariants of a done tree; returns its jobs."""
    jobs = flat(client, root)
    assert client.store.tree_finished(root)
    for job_id, job in jobs.items():
        assert job["state"] in ("SUCCESS", "FAILED", "ABORTED"), (job_id, job)
        children = [jobs[c] for c in job["child_ids"]]
        if job["state"] == "SUCCESS":
            assert all(c["state"] == "SUCCESS" for c in children), job_id
        if job["state"] == "ABORTED" and job["cause"]:
            assert job["cause"] in jobs
    if jobs[root]["state"] == "SUCCESS":
        assert all(j["state"] == "SUCCESS" for j in jobs.values())
    else:
        assert any(j["state"] == "FAILED" or j["cause"] == j["id"] for j in jobs.values())
    return jobs


def test_corrupt_records_end_their_trees_and_the_others_go_on(
        redis_url: str, cluster: Cluster, tmp_path: Path) -> None:
    client = Client(redis_url)
    key = client.keys.tree_key
    raw = client.store.client
    marks = tmp_path / "runs"

    def tree(mark: str) -> str:
        return client.submit({"kind": "noop", "node": "k1", "title": mark, "children": [
            {"kind": "noop", "children": [{"kind": "jgc-mark", "params": {
                "path": str(marks), "mark": mark}}]}, {"kind": "noop"}]},
            allow_unknown_node=True)

    bad = {name: tree(name) for name in ("spec", "state", "field")}
    good = [tree(f"good{i}") for i in range(8)]
    for name, root in bad.items():
        jobs = flat(client, root)
        mid = next(i for i, j in jobs.items() if j["parent"] == root and j["child_ids"])
        leaf = jobs[mid]["child_ids"][0]
        if name == "spec":
            raw.hset(key(root, "spec"), leaf, "{this is not json")
        elif name == "state":
            raw.hset(key(root, "state"), leaf, "SOMETHING")
        else:
            raw.hdel(key(root, "node"), mid)  # found missing once its child succeeds
    node = cluster.start("k1", redis_url)
    corrupt = {}
    for name, root in bad.items():
        status = wait_done(client, root, timeout=20)
        assert status["state"] == "ABORTED", name
        failed = [j for j in flat(client, root).values() if j["state"] == "FAILED"]
        assert len(failed) == 1 and failed[0]["summary"].startswith("corrupt record: "), \
            failed
        corrupt[name] = failed[0]["id"]
    for root in good:
        assert wait_done(client, root, timeout=20)["state"] == "SUCCESS"
    # More work after the bad records: the node still claims, reconciles and records.
    assert wait_done(client, tree("after"), timeout=20)["state"] == "SUCCESS"
    stderr = node.stderr()
    assert "Traceback" not in stderr and "handling" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == len(set(errors)), errors  # nothing logged twice
    for name, job_id in corrupt.items():  # the node logs each bad record, once
        said = [line for line in stderr.splitlines()
                if "corrupt record" in line and job_id in line]
        assert len(said) == 1, (name, said, stderr)


class Chaos(threading.Thread):
    """Faults on a schedule: (seconds after start, what, argument)."""

    def __init__(self, steps: list[tuple[float, str, Any]], act: Any) -> None:
        super().__init__(daemon=True)
        self.steps = steps
        self.act = act
        self.done: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        start = time.monotonic()
        try:
            for at, what, arg in self.steps:
                delay = start + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # a schedule, not a synchronisation
                self.act(what, arg)
                self.done.append(f"{time.monotonic() - start:.1f}s {what} {arg or ''}")
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.slow
def test_chaos_keeps_every_job_at_most_once(own_redis: RedisServer, cluster: Cluster,
                                             tmp_path: Path) -> None:
    url = own_redis.url
    client = Client(url)
    admin = own_redis.client()
    marks = tmp_path / "runs"
    names = ["c1", "c2", "c3"]
    procs = cluster.start_many(names, url, lease=1.5, abort_grace=1.0)
    rng = random.Random(12)

    def spec(i: int) -> dict[str, Any]:
        def mark(k: int) -> dict[str, Any]:
            return {"kind": "jgc-mark", "node": rng.choice(names), "params": {
                "path": str(marks), "mark": f"t{i}-{k}",
                "seconds": rng.choice([0, 0.05, 0.2, 0.5])}}
        return {"kind": "noop", "node": rng.choice(names), "title": f"t{i}", "children": [
            mark(0), mark(1), {"kind": "noop", "node": rng.choice(names),
                               "children": [mark(2), mark(3)]}]}

    def act(what: str, arg: Any) -> None:
        if what == "pubsub":
            admin.client_kill_filter(_type="pubsub")
        elif what == "stop":
            procs[arg].signal(signal.SIGSTOP)
        elif what == "cont":
            procs[arg].signal(signal.SIGCONT)
        elif what == "replace":  # a second process under the frozen one's name
            wait_for(lambda: not (record_of(client, arg) or {}).get("alive"), timeout=10,
                     interval=0.05, what=f"{arg}'s lease to lapse")
            procs[arg + "-old"] = procs[arg]
            procs[arg] = cluster.start(arg, url, lease=1.5, abort_grace=1.0)
        elif what == "kill":
            procs[arg].kill()
        elif what == "restart":
            procs[arg] = cluster.start(arg, url, lease=1.5, abort_grace=1.0)
        elif what == "redis-stop":
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGSTOP)
        elif what == "redis-cont":
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGCONT)

    chaos = Chaos([(0.8, "pubsub", None), (1.5, "stop", "c2"), (2.0, "kill", "c3"),
                   (2.3, "restart", "c3"), (2.5, "replace", "c2"), (3.0, "cont", "c2"),
                   (4.0, "redis-stop", None), (5.0, "redis-cont", None),
                   (5.5, "pubsub", None), (6.0, "kill", "c1"), (6.2, "restart", "c1")], act)
    chaos.start()
    trees = []
    for i in range(40):
        trees.append(client.submit(spec(i)))
        time.sleep(0.15)  # spread the submissions over the faults (pacing, not syncing)
    chaos.join(timeout=60)
    assert chaos.error is None, chaos.error
    assert not chaos.is_alive(), chaos.done
    outcomes: dict[str, int] = {}
    for root in trees:
        wait_done(client, root, timeout=60)
        jobs = check_final(client, root)
        outcomes[jobs[root]["state"]] = outcomes.get(jobs[root]["state"], 0) + 1
        if jobs[root]["state"] == "SUCCESS":
            assert all(len(runs(marks).get(f"{jobs[root]['title']}-{k}", [])) == 1
                       for k in range(4))
    seen = runs(marks)
    twice = {mark: pids for mark, pids in seen.items() if len(pids) > 1}
    print(f"chaos: {chaos.done}; trees {outcomes}; {sum(map(len, seen.values()))} runs of "
          f"{len(seen)} jobs; jobs run twice: {len(twice)}")
    assert not twice, twice
    assert outcomes.get("SUCCESS", 0) >= 5  # work went on between the faults
