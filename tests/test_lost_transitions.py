"""What a node does when Redis forgets transitions it acknowledged (a failover to a
replica that had not received them yet), reproduced on one server by taking them
back by hand: a claim lost while its job runs, an outcome lost after it was recorded.
The node never runs the job again and its outcome ends up recorded; the ``rec``
fixture fails the test if a job's code starts twice."""

from __future__ import annotations

from typing import Any

import pytest

from jobgrove import Client
from jobgrove.messaging.store import Store
from tests.helpers import wait_for
from tests.runtime_helpers import REC, rec, step, submit  # noqa: F401  (rec: autouse)
from tests.store_helpers import rollback, snapshot

pytestmark = pytest.mark.timeout(60)


def lose_claim(store: Store, root: str, job_id: str) -> str:
    """What a replica holds when the claim of ``job_id`` never reached it; returns the
    run token of the lost claim."""
    tk = store.keys.tree_key
    token = str(store.client.hget(tk(root, "token"), job_id))
    for part in ("token", "running", "owner", "started"):
        store.client.hdel(tk(root, part), job_id)
    store.client.hset(tk(root, "state"), job_id, "WAITING")
    store.client.rpush(store.keys.ready(root, "n1"), job_id)
    return token


def test_a_job_whose_claim_was_lost_while_it_ran_is_not_run_again(
        backend: Any, nodes: Any) -> None:
    nodes("n1", backend, reconcile_interval=0.2)
    client = Client(backend)
    store = client.store
    root, ids = submit(client, step("root", step("held", gate="g"), step("quick")))
    held = ids["held"]
    wait_for(lambda: REC.now_running() == {held}, timeout=10, what="the held job running")
    lost = lose_claim(store, root, held)
    # The node claims it again (its ready list says so), but runs it only once.
    wait_for(lambda: store.job_state(held) == "RUNNING"
             and store.client.hget(store.keys.tree_key(root, "token"), held) != lost,
             timeout=10, what="the job claimed again")
    REC.open("g")
    status = client.wait(root, timeout=10)
    assert status["state"] == "SUCCESS"
    assert REC.starts.count(held) == 1 and REC.starts.count(root) == 1


def test_an_outcome_lost_after_it_was_recorded_is_recorded_again(
        backend: Any, nodes: Any) -> None:
    nodes("n1", backend, reconcile_interval=0.2)
    client = Client(backend)
    store = client.store
    root, ids = submit(client, step("root", step("a", gate="a", result={"a": 1}),
                                    step("b", gate="b")))
    wait_for(lambda: REC.now_running() == {ids["a"], ids["b"]}, timeout=10,
             what="both children running")
    replica = snapshot(store, root)
    REC.open("a")
    wait_for(lambda: store.job_state(ids["a"]) == "SUCCESS", timeout=10, what="a recorded")
    rollback(store, root, replica)  # the failover: a is RUNNING again there
    assert store.job_state(ids["a"]) == "RUNNING"
    wait_for(lambda: store.job_state(ids["a"]) == "SUCCESS", timeout=10,
             what="a's outcome recorded again")
    assert store.results(root, [ids["a"]]) == {ids["a"]: {"a": 1}}
    REC.open("b")
    assert client.wait(root, timeout=10)["state"] == "SUCCESS"
    assert REC.starts.count(ids["a"]) == 1


def test_an_outcome_redis_cannot_record_ends_the_job_failed(backend: Any,
                                                             nodes: Any) -> None:
    """A record of the tree that Redis cannot work on (a hash replaced by a string)
    makes the finish script fail for that job: the node does not give the job up to
    stay RUNNING for ever, it ends it FAILED as a corrupt record and the tree ends."""
    nodes("n1", backend, reconcile_interval=0.2)
    client = Client(backend)
    store = client.store
    root, ids = submit(client, step("root", step("held", gate="g"), step("other", gate="o")))
    wait_for(lambda: REC.now_running() == {ids["held"], ids["other"]}, timeout=10,
             what="both jobs running")
    tokens = store.client.hgetall(store.keys.tree_key(root, "token"))
    store.client.delete(store.keys.tree_key(root, "token"))
    store.client.set(store.keys.tree_key(root, "token"), "not a hash")
    REC.open("g")
    wait_for(lambda: store.job_state(ids["held"]) == "FAILED", timeout=10,
             what="the job ended FAILED")
    summary = client.job(ids["held"])["summary"]
    assert summary.startswith("corrupt record: ") and "WRONGTYPE" in summary, summary
    # Its tree aborts the normal way; once the record is repaired, everything ends.
    store.client.delete(store.keys.tree_key(root, "token"))
    store.client.hset(store.keys.tree_key(root, "token"), mapping=tokens)
    status = client.wait(root, timeout=15)
    assert status["state"] == "ABORTED"
    assert REC.starts.count(ids["held"]) == 1
