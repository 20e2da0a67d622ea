"""At most once per attempt when two processes serve one node name: the lease epoch and
the claiming instance fence a stale process off, in its own judgement (its clock) and
in Redis (the scripts refuse it). Real node processes, a real redis-server."""

from __future__ import annotations

import datetime
import re
import signal
import time
from pathlib import Path

import pytest

from jobgrove import Client
from jobgrove.errors import FencedError
from jobgrove.messaging.records import Holder, Verdict
from tests.cluster import Cluster, record_of, runs, wait_done, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.redis

LEASE = 1.5


def holder_of(client: Client, name: str) -> Holder:
    """The instance and epoch a node process registered with (from its raw record in
    the registry: ``nodes()`` never shows them)."""
    record = client.registry.record(name)
    assert record is not None
    return Holder(name, record["lease_token"], record["epoch"])


def marked_tree(path: Path, mark: str, node: str = "m1") -> dict[str, object]:
    return {"kind": "noop", "node": "m2", "title": mark, "children": [
        {"kind": "jgc-mark", "node": node, "params": {"path": str(path), "mark": mark}}]}


def logged_at(stderr: str, pattern: str) -> float | None:
    """Wall-clock time of the first log line matching ``pattern`` (asctime format)."""
    for line in stderr.splitlines():
        if re.search(pattern, line):
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            return stamp.timestamp()
    return None


def test_a_process_frozen_past_its_lease_is_fenced_when_it_wakes(
        redis_url: str, cluster: Cluster, tmp_path: Path) -> None:
    """The fault-injection reproduction: m1 frozen past its lease, a second m1 started,
    the first one woken; then 4 trees with a job on m1 each: every job runs exactly
    once, by the new process, and the stale one's work is refused."""
    client = Client(redis_url)
    marks = tmp_path / "runs"
    old = cluster.start("m1", redis_url, lease=LEASE)
    cluster.start("m2", redis_url, lease=LEASE)
    # One job running on the old process when it freezes: it must not run again.
    before = client.submit(marked_tree(marks, "before") | {"children": [
        {"kind": "jgc-mark", "node": "m1",
         "params": {"path": str(marks), "mark": "before", "seconds": 30}}]})
    wait_for(lambda: "before" in runs(marks), timeout=15, what="the job on the old m1")
    old_holder = holder_of(client, "m1")
    old.signal(signal.SIGSTOP)
    wait_for(lambda: not (record_of(client, "m1") or {}).get("alive"), timeout=10,
             interval=0.05, what="m1's lease to lapse")
    new = cluster.start("m1", redis_url, lease=LEASE)
    new_holder = holder_of(client, "m1")
    assert new_holder.epoch > old_holder.epoch and new_holder.instance != old_holder.instance
    # The new process ended what the old one ran (it never runs again).
    assert wait_done(client, before)["state"] != "SUCCESS"
    woken = time.time()
    old.signal(signal.SIGCONT)
    trees = [client.submit(marked_tree(marks, f"t{i}")) for i in range(4)]
    for tree in trees:
        assert wait_done(client, tree, timeout=20)["state"] == "SUCCESS", cluster.report()
    seen = runs(marks)
    assert seen["before"] == [old.pid]
    for i in range(4):
        assert seen[f"t{i}"] == [new.pid], seen
    # The stale process knows it: it said so once, stopped claiming, and lives on fenced.
    wait_for(lambda: "is held by another process now" in old.stderr(), timeout=10,
             what="the stale process to notice")
    assert old.running and old.stderr().count("is held by another process now") == 1
    fenced_at = logged_at(old.stderr(), "is held by another process now")
    assert fenced_at is not None
    print(f"stale process fenced {max(0.0, fenced_at - woken) * 1000:.0f} ms after SIGCONT "
          "(log timestamps have ms resolution)")
    # Redis refuses it too: a claim or an outcome with its identity changes nothing.
    late = client.submit(marked_tree(marks, "late"))
    wait_done(client, late)
    with pytest.raises(FencedError):
        client.store.claim(late, "m1", 5, old_holder)


def test_a_claim_made_for_a_stale_process_never_runs(redis_url: str, cluster: Cluster,
                                                     tmp_path: Path) -> None:
    """The old process's claim whose reply was lost, made just before it froze or just
    after a newer process registered: either way the job is ended, never run twice."""
    client = Client(redis_url)
    marks = tmp_path / "runs"
    old = cluster.start("m1", redis_url, lease=LEASE)
    cluster.start("m2", redis_url, lease=LEASE)
    old_holder = holder_of(client, "m1")
    old.signal(signal.SIGSTOP)
    # Lost before the freeze: the claim is in Redis, the old process never heard of it.
    lost = client.submit(marked_tree(marks, "lost"))
    wait_state(client, lost, "NEW")
    (claim,) = client.store.claim(lost, "m1", 5, old_holder)
    wait_for(lambda: not (record_of(client, "m1") or {}).get("alive"), timeout=10,
             interval=0.05, what="m1's lease to lapse")
    cluster.start("m1", redis_url, lease=LEASE)
    # The new process ends it at registration: the claim was never its own.
    assert wait_done(client, lost)["state"] != "SUCCESS"
    assert client.job(claim.id)["state"] in ("FAILED", "ABORTED")
    # Made after the new process registered, in a tree it has not touched yet: the new
    # process finds a job RUNNING under its name for another instance and ends it.
    fresh = client.submit({"kind": "noop", "node": "m2", "children": [
        {"kind": "jgc-mark", "node": "m1", "params": {"path": str(marks), "mark": "fresh"}},
        {"kind": "jgc-gate", "node": "m2", "params": {"path": str(tmp_path / "never")}}]})
    try:
        stale = client.store.claim(fresh, "m1", 5, old_holder)
    except FencedError:  # the new m1 claimed first: the job ran there, once
        stale = []
    if stale:
        status = wait_done(client, fresh, timeout=20)
        assert status["state"] != "SUCCESS"
        assert "stale process" in (client.job(stale[0].id)["summary"] or "")
    # The old process's outcome for its claim is refused, whatever it was.
    outcome = client.store.finish(lost, claim.id, claim.token, True, holder=old_holder)
    assert outcome.verdict in (Verdict.STALE, Verdict.FENCED)
    old.signal(signal.SIGCONT)
    wait_for(lambda: "is held by another process now" in old.stderr(), timeout=10,
             what="the stale process to notice")
    assert all(len(pids) == 1 for pids in runs(marks).values()), runs(marks)
    assert "lost" not in runs(marks)  # claimed for a frozen process: it never ran


def test_a_fenced_process_registers_again_once_the_name_is_free(
        redis_url: str, cluster: Cluster, tmp_path: Path) -> None:
    client = Client(redis_url)
    old = cluster.start("m1", redis_url, lease=LEASE)
    cluster.start("m2", redis_url, lease=LEASE)
    old.signal(signal.SIGSTOP)
    wait_for(lambda: not (record_of(client, "m1") or {}).get("alive"), timeout=10,
             interval=0.05, what="m1's lease to lapse")
    new = cluster.start("m1", redis_url, lease=LEASE)
    old.signal(signal.SIGCONT)
    wait_for(lambda: "is held by another process now" in old.stderr(), timeout=10,
             what="the stale process to notice")
    new.stop()
    # The name is free: the old process takes it as a new instance and works again.
    wait_for(lambda: (record_of(client, "m1") or {}).get("pid") == old.pid
             and (record_of(client, "m1") or {}).get("alive"), timeout=15, interval=0.05,
             what="the old process to register again")
    marks = tmp_path / "runs"
    tree = client.submit(marked_tree(marks, "again"))
    assert wait_done(client, tree)["state"] == "SUCCESS"
    assert runs(marks)["again"] == [old.pid]
