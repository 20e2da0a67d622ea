"""The store's contract, continued: reaping the jobs of a lost node, the hints nodes get,
and a claim lost in a failover made again by its job's finish (against real Redis and
fakeredis, as ``test_store_contract``)."""

from __future__ import annotations

import json
from typing import Any

from jobgrove.messaging.records import Finish
from tests.helpers import wait_for
from tests.store_helpers import NODES, make_store, rollback, snapshot, submit
from tests.test_store_contract import tree_dump


def test_reap_fails_jobs_of_a_lost_node(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": "n2"}, {"kind": "noop", "node": "n2"},
        {"kind": "noop", "node": "n1"}, {"kind": "noop", "node": "n1"}]})
    on_n2 = {c.id for c in store.claim(root, "n2", 10)}
    on_n1 = [c.id for c in store.claim(root, "n1", 1)]
    assert len(on_n2) == 2 and len(on_n1) == 1
    ended = store.reap(root, "n2", "node n2 lost")
    assert set(ended) == on_n2
    flat = store.tree_flat(root)
    states = {i: flat[i]["state"] for i in on_n2}
    assert "FAILED" in states.values()
    assert set(states.values()) <= {"FAILED", "ABORTED"}
    assert all(flat[i]["summary"] == "node n2 lost" for i in on_n2)
    cause = store.client.hget(store.keys.tree_key(root, "meta"), "abort_cause")
    assert cause in on_n2 and flat[cause]["state"] == "FAILED"
    # The job running elsewhere is asked to abort; NEW/WAITING ones end ABORTED now.
    assert flat[on_n1[0]]["state"] == "RUNNING"
    assert store.running_on(root, "n1") == {on_n1[0]: cause}
    for job_id, item in flat.items():
        if job_id not in on_n2 and job_id != on_n1[0]:
            assert (item["state"], item["cause"]) == ("ABORTED", cause)
    # Reaping twice changes nothing; reaping a node with nothing running neither.
    before = tree_dump(store, root)
    assert store.reap(root, "n2", "again") == []
    assert store.reap(root, "n3", "other") == []
    assert tree_dump(store, root) == before
    assert not store.tree_finished(root)
    assert store.reap(root, "n1", "node n1 lost") == on_n1
    assert store.job_state(on_n1[0]) == "ABORTED"
    assert store.tree_finished(root)


def test_reap_of_flagged_jobs_ends_them_aborted(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}]})
    (claim,) = store.claim(root, "n1", 1)
    store.abort(root)
    assert store.reap(root, "n1", "lost") == [claim.id]
    status = store.job_status(claim.id)
    assert (status["state"], status["cause"]) == ("ABORTED", root)
    assert store.tree_finished(root)


def test_node_hints_are_published(backend: Any) -> None:
    """Nodes learn of runnable jobs, aborts and finished trees through pub/sub hints."""

    store = make_store(backend)
    pubsub = store.client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*(store.keys.node_channel(n) for n in NODES))
    got: list[tuple[str, dict[str, Any]]] = []

    def hints(count: int) -> list[tuple[str, dict[str, Any]]]:
        def enough() -> bool:
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message":
                got.append((message["channel"].rsplit(":", 1)[1], json.loads(message["data"])))
            return len(got) >= count

        wait_for(enough, timeout=5, what=f"{count} hints")
        out = got[:count]
        del got[:count]
        return out

    try:
        root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
            {"kind": "noop", "node": "n2", "children": [{"kind": "noop", "node": "n1"}]},
            {"kind": "noop"}]})
        flat = store.tree_flat(root)
        a, b = flat[root]["child_ids"]
        (a1,) = flat[a]["child_ids"]
        assert hints(1) == [("n1", {"t": "ready", "root": root})]  # its leaves are on n1
        claims = {c.id: c for c in store.claim(root, "n1", 10)}
        assert set(claims) == {a1, b}
        # a1's parent runs on n2: n2 is told, whoever reports.
        outcome = store.finish_many([Finish(root, a1, claims[a1].token, True,
                                            reporter="n1", claim=True)])[0]
        assert outcome.claimed is None and outcome.ready_on == "n2"
        assert hints(1) == [("n2", {"t": "ready", "root": root})]
        (claim_a,) = store.claim(root, "n2", 10)
        store.finish(root, b, claims[b].token, True)
        store.finish(root, a, claim_a.token, True)  # root (n1) runnable: n1 is told
        assert hints(1) == [("n1", {"t": "ready", "root": root})]
        store.abort(root)
        abort_hints = hints(2)
        assert sorted(abort_hints) == [("n1", {"t": "abort", "root": root, "cause": root}),
                                       ("n2", {"t": "abort", "root": root, "cause": root})]
        assert sorted(hints(2)) == [("n1", {"t": "done", "root": root}),
                                    ("n2", {"t": "done", "root": root})]
    finally:
        pubsub.close()


def test_a_claim_lost_in_a_failover_is_made_again_by_its_finish(backend: Any) -> None:
    """The new primary lacks a claim (replication is asynchronous): the job is WAITING
    there although it ran. Its outcome, reported for that attempt of that run by its
    node, claims it again and records it in one step; nothing else does."""
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1",
                             "children": [{"kind": "noop"}, {"kind": "noop"}]})
    replica = snapshot(store, root)
    a, b = store.claim(root, "n1", 2)
    assert (a.attempt, a.run) == (1, 1)
    rollback(store, root, replica)  # the failover
    assert store.job_state(a.id) == store.job_state(b.id) == "WAITING"

    def report(claim: Any, **changes: Any) -> Any:
        fields = {"reporter": "n1", "attempt": claim.attempt, "run": claim.run, **changes}
        return store.finish_many([Finish(root, claim.id, claim.token, True, "ok",
                                         {"by": claim.id}, **fields)])[0]

    before = tree_dump(store, root)
    for changes in ({"attempt": 2}, {"run": 2}, {"reporter": "n2"},
                    {"attempt": None, "run": None}):
        outcome = report(b, **changes)
        assert (outcome.verdict, outcome.state) == ("stale", "WAITING"), changes
    assert tree_dump(store, root) == before
    outcome = report(a)
    assert (outcome.verdict, outcome.state) == ("ok", "SUCCESS")
    assert store.results(root, [a.id]) == {a.id: {"by": a.id}}
    assert store.job_status(a.id)["started"] is not None
    ready = store.keys.tree_key(root, "ready:n1")
    assert store.client.lrange(ready, 0, -1) == [b.id]  # a left the ready list
    assert report(a).verdict == "stale"  # a replay changes nothing
    assert report(b).verdict == "ok"
    (parent,) = store.claim(root, "n1", 10)
    assert parent.id == root and parent.results == {a.id: {"by": a.id}, b.id: {"by": b.id}}
    assert store.claim(root, "n1", 10) == []
    store.finish(root, root, parent.token, True)
    assert store.tree_finished(root)
