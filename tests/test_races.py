"""Races: many workers (threads, and processes with their own Redis clients) hammer
claim / finish / abort on one tree at once. Every job runs at most once and every
final state is consistent, whatever the interleaving."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from jobgrove.core.spec import parse_spec
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.records import Finish
from jobgrove.messaging.store import Store
from tests.helpers import wait_for

NODES = ("n1", "n2")
WORKERS = 6
DEADLINE = 20.0


def store_for(target: Any) -> Store:
    client = connect(target) if isinstance(target, str) else decoded(target)
    return Store(client)


def tree_spec(mids: int = 6, leaves: int = 6) -> dict[str, Any]:
    """root <- ``mids`` jobs <- ``leaves`` leaves each, spread over both nodes."""
    return {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": NODES[m % 2], "children": [
            {"kind": "noop", "node": NODES[(m + leaf) % 2]} for leaf in range(leaves)]}
        for m in range(mids)]}


def submit(store: Store, spec: dict[str, Any]) -> str:
    jobs, tags = parse_spec(spec, kind_infos())
    return store.submit(jobs, tags)


def hammer(target: Any, root: str, node: str, seed: int, fail_rate: float,
           abort_rate: float, go_key: str) -> dict[str, Any]:
    """One worker: claim jobs of ``node``, finish them (some fail), abort random jobs,
    try stale finishes, until the tree is done. Returns what it claimed and saw."""
    store = store_for(target)
    rng = random.Random(seed)
    ids = sorted(store.tree_flat(root))
    store.client.incr(f"{go_key}:ready")
    give_up = time.monotonic() + DEADLINE
    while not store.client.exists(go_key):  # start together
        if time.monotonic() > give_up:
            raise TimeoutError("no go signal")
        time.sleep(0.001)
    claimed: list[str] = []
    stale_ok = 0
    held: list[Any] = []  # claims of this worker not yet finished
    while not store.tree_finished(root) or held:
        if time.monotonic() > give_up:
            raise TimeoutError(f"tree {root} not finished")
        if not held:
            held = store.claim(root, node, rng.randint(1, 3))
            claimed.extend(c.id for c in held)
        if rng.random() < abort_rate:
            store.abort(rng.choice(ids))
        batch, held = held, []
        if rng.random() < 0.2:
            for claim in batch:  # somebody else's (or a made-up) token finishes nothing
                outcome = store.finish(root, claim.id, uuid.uuid4().hex, True)
                stale_ok += outcome.verdict != "stale"
        if rng.random() < 0.5:
            # The node's way: many outcomes in one round trip, the parent claimed in
            # the same step when it becomes runnable here.
            items = [Finish(root, c.id, c.token, rng.random() >= fail_rate, "done",
                            {"by": seed}, reporter=node, claim=True) for c in batch]
            for outcome in store.finish_many(items):
                if outcome.claimed is not None:
                    claimed.append(outcome.claimed.id)
                    held.append(outcome.claimed)
        else:
            for claim in batch:
                store.finish(root, claim.id, claim.token, rng.random() >= fail_rate, "done",
                             {"by": seed})
        for claim in batch:  # a replay of an outcome is stale
            stale_ok += store.finish(root, claim.id, claim.token, True).verdict != "stale"
    return {"claimed": claimed, "bad_stale": stale_ok}


def check_consistent(store: Store, root: str, claimed: list[str], *,
                     all_results: bool = True) -> dict[str, dict[str, Any]]:
    """The invariants of a finished tree; returns its flat status."""
    assert len(claimed) == len(set(claimed)), "a job was claimed (ran) twice"
    flat = store.tree_flat(root)
    ids = set(flat)
    assert set(claimed) <= ids
    state = {i: j["state"] for i, j in flat.items()}
    assert store.tree_finished(root)
    assert set(state.values()) <= {"SUCCESS", "FAILED", "ABORTED"}
    # Started exactly the claimed jobs.
    assert {i for i, j in flat.items() if j["started"] is not None} == set(claimed)
    for job_id, job in flat.items():
        if job["state"] == "SUCCESS":
            assert job_id in claimed
            assert all(state[c] == "SUCCESS" for c in job["child_ids"]), job_id
        if job["state"] == "FAILED":
            assert job_id in claimed and job["cause"] is None
        if job["state"] == "ABORTED":
            assert job["cause"] in ids, job_id
        assert job["finished"] is not None
    failed = [i for i, s in state.items() if s == "FAILED"]
    assert len(failed) <= 1, "a second failure must end ABORTED (the tree was aborting)"
    meta = store.client.hgetall(store.keys.tree_key(root, "meta"))
    if failed or "ABORTED" in state.values():
        assert state[root] != "SUCCESS"
        cause = meta["abort_cause"]
        # One cause for the whole tree: the failed job, or the job a user aborted.
        aborted = [i for i, s in state.items() if s == "ABORTED"]
        assert {flat[i]["cause"] for i in aborted} == ({cause} if aborted else set())
        if failed:
            assert cause == failed[0]
        assert state[cause] == "FAILED" or flat[cause]["cause"] == cause
    else:
        assert state[root] == "SUCCESS" and set(claimed) == ids
        assert "abort_cause" not in meta
    tk = store.keys.tree_key
    assert store.client.scard(tk(root, "open")) == 0
    assert store.client.hlen(tk(root, "running")) == 0
    for node in NODES:
        assert store.client.llen(tk(root, f"ready:{node}")) == 0
    # Results were kept for the jobs that succeeded only (all of them report one).
    results = set(store.results(root, ids))
    succeeded = {i for i, s in state.items() if s == "SUCCESS"}
    assert results == succeeded if all_results else results <= succeeded
    return flat


def race(executor: Executor, target: Any, *, fail_rate: float, abort_rate: float,
         seed: int, mids: int = 6, leaves: int = 6, spread: bool = False
         ) -> tuple[Store, str, list[str]]:
    store = store_for(target)
    root = submit(store, tree_spec(mids, leaves))
    go_key = f"race:{uuid.uuid4().hex}"
    futures = [executor.submit(hammer, target, root, NODES[w % 2], seed * 100 + w, fail_rate,
                               abort_rate, go_key) for w in range(WORKERS)]
    wait_for(lambda: int(store.client.get(f"{go_key}:ready") or 0) == WORKERS, timeout=30,
             what="workers ready")
    store.client.set(go_key, "1")
    claimed: list[str] = []
    busy_workers = 0
    for future in futures:
        report = future.result(timeout=DEADLINE + 10)
        assert report["bad_stale"] == 0, "a stale finish was accepted"
        claimed.extend(report["claimed"])
        busy_workers += bool(report["claimed"])
    if spread:  # the work really was shared: several workers on each node ran jobs
        assert busy_workers >= 3, busy_workers
    return store, root, claimed


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(WORKERS) as pool:
        yield pool


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        yield pool


# -- threads --------------------------------------------------------------------------
def test_threads_concurrent_completions(redis_url: str, threads: ThreadPoolExecutor) -> None:
    store, root, claimed = race(threads, redis_url, fail_rate=0, abort_rate=0, seed=1,
                                mids=8, leaves=8, spread=True)
    flat = check_consistent(store, root, claimed)
    assert flat[root]["state"] == "SUCCESS"
    assert sorted(claimed) == sorted(flat)  # every job ran, exactly once


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_threads_completions_failures_and_aborts(redis_url: str, threads: ThreadPoolExecutor,
                                                 seed: int) -> None:
    store, root, claimed = race(threads, redis_url, fail_rate=0.04, abort_rate=0.02,
                                seed=seed)
    check_consistent(store, root, claimed)


def test_threads_on_fakeredis(fake: Any, threads: ThreadPoolExecutor) -> None:
    from jobgrove.messaging.connection import fake_client

    client = fake_client(fake)
    store, root, claimed = race(threads, client, fail_rate=0, abort_rate=0, seed=5)
    flat = check_consistent(store, root, claimed)
    assert flat[root]["state"] == "SUCCESS"
    store, root, claimed = race(threads, client, fail_rate=0.05, abort_rate=0.03, seed=6)
    check_consistent(store, root, claimed)


def test_threads_simultaneous_aborts(redis_url: str) -> None:
    """Every worker holds a running job, then all abort different jobs at once."""
    store = store_for(redis_url)
    root = submit(store, tree_spec(mids=4, leaves=4))
    claims = store.claim(root, "n1", 100) + store.claim(root, "n2", 100)
    assert len(claims) == 16
    barrier = threading.Barrier(len(claims))
    verdicts: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        own = store_for(redis_url)
        own.holder = store.holder  # its own connection, the claiming process's identity
        claim = claims[index]
        barrier.wait(timeout=10)
        if index % 2:
            outcome = own.abort(claim.id)
        else:
            outcome = own.finish(root, claim.id, claim.token, index % 4 == 0)
        with lock:
            verdicts.append((outcome.verdict, outcome.state))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(claims))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=15)
    assert len(verdicts) == len(claims)
    # Jobs asked to abort are still RUNNING: their nodes report them now.
    for claim in claims:
        store.finish(root, claim.id, claim.token, True)
    flat = check_consistent(store, root, [c.id for c in claims], all_results=False)
    assert flat[root]["state"] == "ABORTED"
    assert sum(v == ("ok", "RUNNING") for v in verdicts) >= 1


# -- processes ------------------------------------------------------------------------
def test_processes_concurrent_completions(redis_url: str,
                                          processes: ProcessPoolExecutor) -> None:
    store, root, claimed = race(processes, redis_url, fail_rate=0, abort_rate=0, seed=7,
                                mids=8, leaves=8, spread=True)
    flat = check_consistent(store, root, claimed)
    assert flat[root]["state"] == "SUCCESS"
    assert sorted(claimed) == sorted(flat)


@pytest.mark.parametrize("seed", [8, 9, 10])
def test_processes_completions_failures_and_aborts(redis_url: str,
                                                   processes: ProcessPoolExecutor,
                                                   seed: int) -> None:
    store, root, claimed = race(processes, redis_url, fail_rate=0.04, abort_rate=0.02,
                                seed=seed)
    check_consistent(store, root, claimed)
