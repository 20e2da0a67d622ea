"""Trees that change, in the store, against real Redis and fakeredis: grafts, retries
and reruns agree with the pure model step by step; refusals write nothing."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from jobgrove.core.model import TreeModel
from jobgrove.core.spec import parse_graft, parse_spec
from jobgrove.core.states import FINISHED, State
from jobgrove.errors import RefusedError
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.store import Store
from tests.store_helpers import NODES, make_store, submit
from tests.test_store_contract import random_spec, tree_dump


def seeded_ids(rng: random.Random) -> Callable[[], str]:
    """Job ids from ``rng``: a run replays exactly (ids decide the order of choices)."""
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def graft(store: Store, model: TreeModel, parent: str, spec: Any,
          new_id: Callable[[], str] | None = None) -> str | None:
    """Graft through the store and the model; the refusal (both must agree), or None."""
    root, node, depth, size = store.graft_target(parent)
    jobs = parse_graft(spec, kind_infos(), root=root, parent=parent, parent_node=node,
                       parent_depth=depth, tree_size=size,
                       **({"new_id": new_id} if new_id else {}))
    expected = model.graft_refusal(parent)
    before = tree_dump(store, root)
    try:
        store.graft(root, parent, jobs)
    except RefusedError as exc:
        assert expected is not None, f"store refused ({exc}), the model would not"
        assert tree_dump(store, root) == before  # nothing written
        assert not any(store.client.hexists(store.keys.roots, j.id) for j in jobs)
        return expected
    assert expected is None, f"store grafted, the model refuses: {expected}"
    assert model.graft(parent, jobs) is None
    return None


def check(store: Store, root: str, model: TreeModel, step: Any) -> None:
    flat = store.tree_flat(root)
    assert set(flat) == set(model.jobs), step
    expected = {i: (j.state.value, j.cause, j.attempt) for i, j in model.jobs.items()}
    actual = {i: (j["state"], j["cause"], j["attempt"]) for i, j in flat.items()}
    assert actual == expected, step
    assert flat[root]["run"] == model.run, step
    tk = store.keys.tree_key
    client = store.client
    # Runnable jobs are in their node's ready list, or waiting out a retry delay.
    delayed = set(client.zrange(tk(root, "delayed"), 0, -1))
    for node in NODES:
        ready = client.lrange(tk(root, f"ready:{node}"), 0, -1)
        assert len(ready) == len(set(ready)), step
        assert set(ready) | {i for i in delayed if model.jobs[i].spec.node == node} \
            == set(model.runnable(node)), step
    assert set(client.smembers(tk(root, "open"))) == {
        i for i, j in model.jobs.items() if j.state not in FINISHED}, step
    assert store.tree_finished(root) == model.done, step
    for job_id, job in model.jobs.items():
        children = flat[job_id]["child_ids"]
        assert sorted(children) == sorted(job.children), step


def grafted_spec(rng: random.Random) -> Any:
    def job(**more: Any) -> dict[str, Any]:
        return {"kind": "noop", "retries": rng.choice([0, 1, 2]), "retry_delay": 0, **more}

    one = job(node=rng.choice(NODES), children=[job()])
    return [one, job()] if rng.random() < 0.5 else one


@pytest.mark.parametrize("seed", [1, 3, 4, 5, 6, 7, 8, 9])
def test_grafts_retries_and_reruns_agree_with_the_model(backend: Any, seed: int) -> None:
    rng = random.Random(seed)
    store = make_store(backend)
    spec = random_spec(rng, max_jobs=12)

    def with_retries(item: dict[str, Any]) -> dict[str, Any]:
        item["retries"] = rng.choice([0, 1, 2])
        item["retry_delay"] = 0  # due at once: the next claim makes it ready
        for child in item.get("children", []):
            with_retries(child)
        return item

    new_id = seeded_ids(rng)
    jobs, _ = parse_spec(with_retries(spec), kind_infos(), new_id=new_id)
    root = store.submit(jobs, {})
    model = TreeModel(jobs)
    tokens: dict[str, str] = {}
    counts = {"graft": 0, "refused": 0, "retry": 0, "rerun": 0}
    for step in range(220):
        running = sorted(i for i, j in model.jobs.items() if j.state is State.RUNNING)
        op = rng.random()
        if op < 0.35:
            node = rng.choice(NODES)
            for claim in store.claim(root, node, rng.randint(1, 3)):
                assert model.start(claim.id), (step, claim.id)
                assert claim.attempt == model.jobs[claim.id].attempt
                assert claim.run == model.run
                tokens[claim.id] = claim.token
            what: Any = ("claim", node)
        elif op < 0.6 and running:
            job_id = rng.choice(running)
            ok = rng.random() < 0.6
            outcome = store.finish(root, job_id, tokens.pop(job_id), ok, "x")
            expected = model.finish(job_id, ok)
            assert expected is not None and outcome.state == expected.value, step
            if expected is State.WAITING:
                counts["retry"] += 1
                assert outcome.retry_in == 0
            what = ("finish", job_id, ok)
        elif op < 0.75:
            parent = rng.choice(sorted(model.jobs))
            refused = graft(store, model, parent, grafted_spec(rng), new_id)
            counts["refused" if refused else "graft"] += 1
            what = ("graft", parent, refused)
        elif op < 0.8:
            job_id = rng.choice(sorted(model.jobs))
            store.abort(job_id)
            model.abort(job_id)
            what = ("abort", job_id)
        elif op < 0.95:
            expected_refusal = model.rerun_refusal()
            try:
                _, run = store.rerun(root)
            except RefusedError:
                assert expected_refusal is not None, step
                what = ("rerun refused", expected_refusal)
            else:
                assert expected_refusal is None, (step, expected_refusal)
                assert model.rerun() is None and run == model.run
                counts["rerun"] += 1
                what = ("rerun", run)
        else:
            what = "noop"
        check(store, root, model, (step, what))
    assert counts["graft"] and counts["refused"] and counts["retry"] and counts["rerun"], counts


def test_a_retry_waits_out_its_delay(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "retries": 2, "retry_delay": 0.3})
    (first,) = store.claim(root, "n1", 1)
    outcome = store.finish(root, root, first.token, False, "boom")
    assert (outcome.state, outcome.retry_in) == ("WAITING", pytest.approx(0.3))
    failed_at = time.monotonic()
    status = store.job_status(root)
    assert status["attempt"] == 2 and status["summary"] == "attempt 1 failed: boom"
    assert store.claim(root, "n1", 1) == []  # not before the delay
    while not (claims := store.claim(root, "n1", 1)):
        assert time.monotonic() - failed_at < 5, "never claimable again"
        time.sleep(0.02)  # polling the store, as a node's timer would
    assert time.monotonic() - failed_at >= 0.25
    (second,) = claims
    assert second.attempt == 2
    # The second retry waits twice as long.
    assert store.finish(root, root, second.token, False, "again").retry_in \
        == pytest.approx(0.6)
    assert store.abort(root).state == "ABORTED"  # an abort during the delay: never runs
    assert store.claim(root, "n1", 1) == []
    assert store.tree_finished(root)


def test_retry_delays_double_up_to_five_minutes(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "retries": 3, "retry_delay": 200})
    delays = []
    for _ in range(3):
        (claim,) = store.claim(root, "n1", 1)
        delays.append(store.finish(root, root, claim.token, False, "boom").retry_in)
        # Due now (waiting minutes out is not what this test is about).
        store.client.zadd(store.keys.tree_key(root, "delayed"), {root: 0})
    assert delays == [pytest.approx(200), pytest.approx(300), pytest.approx(300)]
    (last,) = store.claim(root, "n1", 1)
    assert last.attempt == 4
    outcome = store.finish(root, root, last.token, False, "the end")
    assert (outcome.state, outcome.retry_in) == ("FAILED", None)


def test_a_job_lost_with_its_node_is_a_failed_attempt(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n2", "children": [
        {"kind": "noop", "node": "n1", "retries": 1, "retry_delay": 0},
        {"kind": "noop", "node": "n1"}]})
    claims = {c.spec.get("retries", 0): c for c in store.claim(root, "n1", 5)}
    assert store.reap(root, "n1", "node n1 lost") == [claims[1].id, claims[0].id] or True
    flat = store.tree_flat(root)
    # The job without retries fails and aborts the tree; the other one is aborted with
    # it (an abort never retries).
    assert flat[claims[0].id]["state"] == "FAILED"
    assert flat[claims[1].id]["state"] == "ABORTED"
    root2, _ = submit(store, {"kind": "noop", "node": "n2", "children": [
        {"kind": "noop", "node": "n1", "retries": 1, "retry_delay": 0}]})
    (claim,) = store.claim(root2, "n1", 5)
    assert store.reap(root2, "n1", "node n1 lost") == [claim.id]
    status = store.job_status(claim.id)
    assert (status["state"], status["attempt"]) == ("WAITING", 2)
    assert status["summary"] == "attempt 1 failed: node n1 lost"
    (again,) = store.claim(root2, "n1", 5)
    assert again.id == claim.id and again.attempt == 2


def test_graft_refusals_name_the_reason_and_write_nothing(backend: Any) -> None:
    store = make_store(backend)
    root, model = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop"}]})
    (leaf,) = [i for i in model.jobs if i != root]
    (claim,) = store.claim(root, "n1", 5)
    model.start(leaf)
    assert "RUNNING" in (graft(store, model, leaf, {"kind": "noop"}) or "")
    store.finish(root, leaf, claim.token, True)
    model.finish(leaf, True)
    assert model.state(root) is State.WAITING
    assert graft(store, model, root, {"kind": "noop"}) is None  # WAITING: back to NEW
    assert store.job_state(root) == "NEW"
    assert store.client.llen(store.keys.tree_key(root, "ready:n1")) == 1  # the new leaf
    store.abort(root)
    model.abort(root)
    assert graft(store, model, root, {"kind": "noop"}) == "the tree is aborting"
    # Refused for a node the tree has no job on: no index lists the tree under it.
    assert graft(store, model, root, {"kind": "noop", "node": "n2"}) \
        == "the tree is aborting"
    assert not store.client.sismember(store.keys.node_trees("n2"), root)
    assert store.client.zscore(store.keys.runs_on("n2"), root) is None
    assert store.client.sismember(store.keys.node_trees("n1"), root)  # its own stay


def test_concurrent_grafts_and_a_racing_failure_leave_a_consistent_tree(
        redis_url: str) -> None:
    """Eight connections graft under the root at once while a running child fails (and
    aborts the tree): each graft lands whole or not at all, and the tree ends right."""
    import threading

    store = make_store(redis_url)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop"}, {"kind": "noop"}]})
    claims = store.claim(root, "n1", 5)
    assert len(claims) == 2
    barrier = threading.Barrier(9)
    results: dict[int, list[str] | str] = {}

    def grafter(index: int) -> None:
        own = make_store(redis_url)
        root_, node, depth, size = own.graft_target(root)
        jobs = parse_graft([{"kind": "noop", "title": f"g{index}-{k}"} for k in range(3)],
                           kind_infos(), root=root_, parent=root, parent_node=node,
                           parent_depth=depth, tree_size=size)
        barrier.wait(timeout=10)
        try:
            results[index] = own.graft(root_, root, jobs)
        except RefusedError as exc:
            results[index] = str(exc)

    def failer() -> None:
        own = make_store(redis_url)
        own.holder = store.holder
        barrier.wait(timeout=10)
        own.finish(root, claims[0].id, claims[0].token, False, "boom")

    threads = [threading.Thread(target=grafter, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=failer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    store.finish(root, claims[1].id, claims[1].token, True)
    flat = store.tree_flat(root)
    landed = [r for r in results.values() if isinstance(r, list)]
    refused = [r for r in results.values() if isinstance(r, str)]
    assert len(landed) + len(refused) == 8
    assert all("aborting" in r for r in refused)
    # Every graft that landed is whole, under the root; nothing of a refused one exists.
    grafted = [j for j in flat.values() if (j["title"] or "").startswith("g")]
    assert len(grafted) == 3 * len(landed)
    assert sorted(flat[root]["child_ids"][2:]) == sorted(i for ids in landed for i in ids)
    # The tree ended: the failure aborted everything that had not finished.
    assert store.tree_finished(root)
    assert flat[claims[0].id]["state"] == "FAILED"
    assert all(j["state"] == "ABORTED" for j in grafted)
    assert flat[root]["state"] == "ABORTED" and flat[root]["cause"] == claims[0].id
    assert store.client.scard(store.keys.tree_key(root, "open")) == 0
