"""The Redis store's contract, run against a real redis-server and against fakeredis.

The Lua scripts must apply exactly the rules of the pure ``TreeModel``: random
operation sequences are replayed on both and every job's state and cause compared
after each step.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from jobgrove.core.model import TreeModel
from jobgrove.core.states import FINISHED, State
from jobgrove.messaging.records import Finish
from jobgrove.messaging.store import Store
from tests.store_helpers import NODES, make_store, submit


def random_spec(rng: random.Random, max_jobs: int = 25) -> dict[str, Any]:
    count = [1]

    def make(depth: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": "noop", "node": rng.choice(NODES)}
        children = []
        for _ in range(rng.randrange(4) if depth < 4 else 0):
            if count[0] >= max_jobs:
                break
            count[0] += 1
            children.append(make(depth + 1))
        if children:
            spec["children"] = children
        return spec

    return make(1)


def tree_dump(store: Store, root: str) -> dict[str, Any]:
    """Every key of the tree (and the shared root index) with its full value."""
    client = store.client
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=f"{store.keys.tree(root)}:*")):
        kind = client.type(key)
        if kind == "hash":
            out[key] = client.hgetall(key)
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        elif kind == "list":
            out[key] = client.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = client.get(key)
    return out


def check_agrees(store: Store, root: str, model: TreeModel, step: Any = None) -> None:
    flat = store.tree_flat(root)
    assert set(flat) == set(model.jobs)
    expected = {i: (j.state.value, j.cause) for i, j in model.jobs.items()}
    actual = {i: (j["state"], j["cause"]) for i, j in flat.items()}
    assert actual == expected, step
    tk = store.keys.tree_key
    client = store.client
    # Abort flags of RUNNING jobs.
    flags = {i: j.abort_requested for i, j in model.jobs.items()
             if j.state is State.RUNNING and j.abort_requested}
    assert client.hgetall(tk(root, "abort")) == flags, step
    # Which jobs run where, which are still open.
    assert client.hgetall(tk(root, "running")) == {
        i: j.spec.node for i, j in model.jobs.items() if j.state is State.RUNNING}, step
    assert set(client.smembers(tk(root, "open"))) == {
        i for i, j in model.jobs.items() if j.state not in FINISHED}, step
    # The ready lists hold exactly the runnable jobs, once each.
    for node in NODES:
        ready = client.lrange(tk(root, f"ready:{node}"), 0, -1)
        assert len(ready) == len(set(ready)), step
        assert set(ready) == set(model.runnable(node)), step
    assert store.tree_finished(root) == all(j.state in FINISHED for j in model.jobs.values())
    meta_cause = client.hget(tk(root, "meta"), "abort_cause")
    assert meta_cause == model.abort_cause, step
    for job_id, item in flat.items():
        if item["state"] in ("RUNNING", "SUCCESS", "FAILED") or (
                item["state"] == "ABORTED" and model.jobs[job_id].abort_requested):
            assert item["started"] is not None, step
        elif item["state"] in ("NEW", "WAITING"):
            assert item["started"] is None and item["finished"] is None, step
        if item["state"] in FINISHED:
            assert item["finished"] is not None, step


# -- the store agrees with the model ----------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_agree_with_model(backend: Any, seed: int) -> None:
    rng = random.Random(seed)
    store = make_store(backend)
    steps = 0
    claimed_ever: set[str] = set()
    trees = 0
    while steps < 150:
        trees += 1
        root, model = submit(store, random_spec(rng))
        tokens: dict[str, str] = {}
        old_tokens: dict[str, str] = {}
        check_agrees(store, root, model, "submit")
        for _ in range(80):
            steps += 1
            running = sorted(i for i, j in model.jobs.items() if j.state is State.RUNNING)
            op = rng.random()
            if op < 0.35:
                node = rng.choice(NODES)
                want = rng.randrange(1, 4)
                before = model.runnable(node)
                claims = store.claim(root, node, want)
                assert len(claims) == min(want, len(before)), step_info(steps, "claim")
                for claim in claims:
                    assert claim.id in before
                    assert claim.id not in claimed_ever, "a job was claimed twice"
                    claimed_ever.add(claim.id)
                    assert claim.spec["node"] == node
                    assert model.start(claim.id)
                    tokens[claim.id] = claim.token
                what: Any = ("claim", node, want)
            elif op < 0.6 and running:
                job_id = rng.choice(running)
                ok = rng.random() < 0.9
                outcome = store.finish(root, job_id, tokens[job_id], ok, "done",
                                       {"by": job_id})
                expected = model.finish(job_id, ok)
                assert outcome.verdict == "ok"
                assert outcome.state == expected.value
                assert outcome.claimed is None
                old_tokens[job_id] = tokens.pop(job_id)
                what = ("finish", job_id, ok)
            elif op < 0.75 and running:
                # Several outcomes in one round trip, each reported by a node that may
                # claim the parent in the same step when it becomes runnable there.
                batch = rng.sample(running, rng.randint(1, len(running)))
                items = [Finish(root, j, tokens[j], rng.random() < 0.9, "done", {"by": j},
                                reporter=rng.choice(NODES), claim=rng.random() < 0.7)
                         for j in batch]
                outcomes = store.finish_many(items)
                assert len(outcomes) == len(items)
                for item, outcome in zip(items, outcomes):
                    parent = model.jobs[item.job_id].spec.parent
                    was_new = parent is not None and model.state(parent) is State.NEW
                    expected = model.finish(item.job_id, item.ok)
                    assert (outcome.verdict, outcome.state) == ("ok", expected.value)
                    old_tokens[item.job_id] = tokens.pop(item.job_id)
                    woke = was_new and model.state(parent) is State.WAITING
                    pnode = model.jobs[parent].spec.node if woke else None
                    assert outcome.ready_on == pnode
                    if woke and item.claim and pnode == item.reporter:
                        claimed = outcome.claimed
                        assert claimed is not None and claimed.id == parent
                        assert claimed.id not in claimed_ever, "a job was claimed twice"
                        claimed_ever.add(claimed.id)
                        assert model.start(parent)
                        tokens[parent] = claimed.token
                        assert claimed.results == {
                            c: {"by": c} for c in model.jobs[parent].spec.children}
                        assert claimed.context == store.context(root)
                    else:
                        assert outcome.claimed is None
                what = ("finish_many", [(i.job_id, i.ok, i.reporter, i.claim) for i in items])
            elif op < 0.85 and (running or old_tokens):
                # A stale token changes nothing: a wrong one, or one of a finished run.
                if running and (not old_tokens or rng.random() < 0.5):
                    job_id, token = rng.choice(running), uuid.uuid4().hex
                else:
                    job_id, token = rng.choice(sorted(old_tokens.items()))
                before_dump = tree_dump(store, root)
                outcome = store.finish(root, job_id, token, rng.random() < 0.5, "late",
                                       {"late": True})
                assert outcome.verdict == "stale"
                assert outcome.state == model.state(job_id).value
                assert tree_dump(store, root) == before_dump
                what = ("stale", job_id)
            elif op < 0.9:
                job_id = rng.choice(sorted(model.jobs))
                was = model.state(job_id)
                outcome = store.abort(job_id)
                expected = model.abort(job_id)
                assert outcome.state == expected.value
                assert outcome.verdict == ("finished" if was in FINISHED else "ok")
                what = ("abort", job_id, was)
            else:
                what = "noop"
            check_agrees(store, root, model, step_info(steps, what))
            if store.tree_finished(root):
                break
        # Finish what is left so the tree ends (and check that too).
        while not store.tree_finished(root):
            for node in NODES:
                for claim in store.claim(root, node, 100):
                    assert model.start(claim.id)
                    assert claim.id not in claimed_ever
                    claimed_ever.add(claim.id)
                    tokens[claim.id] = claim.token
            for job_id in sorted(i for i, j in model.jobs.items() if j.state is State.RUNNING):
                store.finish(root, job_id, tokens.pop(job_id), True, "", {"by": job_id})
                model.finish(job_id, True)
            check_agrees(store, root, model, "drain")
        assert model.state(root) in FINISHED
    assert trees >= 2


def step_info(step: int, what: Any) -> str:
    return f"step {step}: {what}"


def test_claim_never_returns_a_job_twice(backend: Any) -> None:
    store = make_store(backend)
    root, model = submit(store, {"kind": "noop", "node": "n1",
                                 "children": [{"kind": "noop"} for _ in range(5)]})
    ready = store.keys.tree_key(root, "ready:n1")
    leaves = store.client.lrange(ready, 0, -1)
    assert len(leaves) == 5
    # A duplicated ready entry (e.g. a hint replayed) must not start a job twice.
    store.client.rpush(ready, leaves[0], leaves[0])
    claims = store.claim(root, "n1", 100)
    assert sorted(c.id for c in claims) == sorted(leaves)
    assert len({c.token for c in claims}) == 5
    store.client.rpush(ready, *leaves)
    assert store.claim(root, "n1", 100) == []
    assert store.claim(root, "n2", 100) == []  # nothing for another node
    assert store.claim(root, "n1", 0) == []
    for job_id in leaves:
        model.start(job_id)
    check_agrees(store, root, model)


def test_claim_refused_once_tree_aborts(backend: Any) -> None:
    store = make_store(backend)
    root, model = submit(store, {"kind": "noop", "node": "n1",
                                 "children": [{"kind": "noop"}, {"kind": "noop"}]})
    first = store.claim(root, "n1", 1)
    assert len(first) == 1
    model.start(first[0].id)
    assert store.abort(first[0].id).state == "RUNNING"
    model.abort(first[0].id)
    ready = store.keys.tree_key(root, "ready:n1")
    store.client.rpush(ready, root)  # even a stray entry: nothing starts now
    assert store.claim(root, "n1", 10) == []
    assert store.client.llen(ready) == 0
    check_agrees(store, root, model)


def test_stale_finish_changes_nothing(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1",
                             "children": [{"kind": "noop"}, {"kind": "noop"}]})
    claims = store.claim(root, "n1", 2)
    before = tree_dump(store, root)
    for ok in (True, False):
        outcome = store.finish(root, claims[0].id, "not-the-token", ok, "x", {"r": 1})
        assert (outcome.verdict, outcome.state) == ("stale", "RUNNING")
        # Another job's token does not fit either.
        outcome = store.finish(root, claims[0].id, claims[1].token, ok)
        assert outcome.verdict == "stale"
    assert tree_dump(store, root) == before
    assert store.finish(root, claims[0].id, claims[0].token, True).verdict == "ok"
    after_first = tree_dump(store, root)
    # The right token, but the job is finished: a replay changes nothing.
    assert store.finish(root, claims[0].id, claims[0].token, False).verdict == "stale"
    assert tree_dump(store, root) == after_first
    # A WAITING/NEW job cannot be finished at all.
    assert store.finish(root, root, "", True).verdict == "stale"
    assert store.finish(root, str(uuid.uuid4()), "", True).verdict == "stale"
    assert tree_dump(store, root) == after_first


def test_fenced_job_late_result_discarded(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}]})
    (claim,) = store.claim(root, "n1", 1)
    store.abort(root)
    # The node fences the job (records it ABORTED) ...
    fenced = store.finish(root, claim.id, claim.token, False, "did not stop")
    assert fenced.state == "ABORTED"
    assert store.tree_finished(root)
    before = tree_dump(store, root)
    # ... and the job's own late success is discarded.
    late = store.finish(root, claim.id, claim.token, True, "ok", {"late": 1})
    assert late.verdict == "stale"
    assert tree_dump(store, root) == before
    assert store.results(root, [claim.id]) == {}


def test_results_and_context_reach_the_parent(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]})
    claims = {c.id: c for c in store.claim(root, "n1", 10)}
    assert len(claims) == 4
    assert all(c.results == {} and c.context == {} for c in claims.values())
    c1, c2, c3, c4 = store.tree_flat(root)[root]["child_ids"]
    store.set_context(root, "built", {"image": "shop:3", "layers": [1, 2]})
    store.set_context(root, "note", "héllo ✓")
    values = {c1: {"x": [1, "é", None, 2.5]}, c2: 0, c3: None, c4: "text"}
    for job_id, value in values.items():
        assert store.finish(root, job_id, claims[job_id].token, True, "ok", value).verdict == "ok"
    (parent,) = store.claim(root, "n1", 10)
    assert parent.id == root
    # None is "no result"; falsy values are kept.
    assert parent.results == {c1: values[c1], c2: 0, c4: "text"}
    assert parent.context == {"built": {"image": "shop:3", "layers": [1, 2]},
                              "note": "héllo ✓"}
    assert store.context(root) == parent.context
    assert store.results(root, [c1, c2, c3, c4, root]) == {c1: values[c1], c2: 0, c4: "text"}
    assert parent.spec["children"] == [c1, c2, c3, c4]


def test_failed_job_result_not_stored(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}]})
    (claim,) = store.claim(root, "n1", 1)
    store.finish(root, claim.id, claim.token, False, "exit code 3", {"partial": True})
    assert store.results(root, [claim.id]) == {}
    status = store.job_status(claim.id)
    assert (status["state"], status["summary"], status["cause"]) == ("FAILED", "exit code 3",
                                                                      None)
    assert store.job_status(root)["cause"] == claim.id
