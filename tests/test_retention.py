"""Deleting and pruning trees in the store (``messaging/retention.py``), against a real
redis-server and fakeredis: every key and index entry goes, refusals change nothing,
a deletion cut short is finished by the next one, prune picks by finish time."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobgrove.core.spec import parse_graft
from jobgrove.errors import JobgroveError, NodeBusyError, TreeBusyError, UnknownJobError
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.logtails import read_stored
from jobgrove.messaging.records import Finish
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.retention import Retention, tree_counts
from jobgrove.messaging.scripts import TreeScript
from jobgrove.messaging.store import Store
from tests.store_helpers import make_store, submit

TAGS = {"workspace": "acme", "application": "shop"}


def snapshot(store: Store) -> dict[str, Any]:
    """Every key with its size: what "Redis is back to where it was" means here."""
    client = store.client
    out: dict[str, Any] = {}
    for key in client.scan_iter(match="*"):
        kind = client.type(key)
        size = {"hash": client.hlen, "zset": client.zcard, "set": client.scard,
                "list": client.llen}.get(kind)
        out[key] = size(key) if size else client.get(key)
    return out


def run_tree(store: Store, tags: dict[str, str] | None = TAGS, fail: bool = False) -> str:
    """A three-job tree over two nodes, run to the end through the real scripts, with
    results, context, and log tails stored with the outcomes."""
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": "n2"}, {"kind": "noop"}]}, tags)
    store.set_context(root, "k", {"v": 1})
    for _ in range(3):
        for node in ("n1", "n2"):
            for claim in store.claim(root, node, 10):
                ok = not (fail and claim.id != root)
                store.finish_many([Finish(root, claim.id, claim.token, ok, "done",
                                          {"id": claim.id}, log_tail=(10, f"log {claim.id}"))])
    assert store.tree_finished(root)
    return root


@pytest.fixture
def store(backend: Any) -> Store:
    store = make_store(backend)
    registry = Registry(store.client, store.keys)
    for node in ("n1", "n2"):
        registry.write_record(node, {"name": node})
    return store


def drain_gone_logs(retention: Retention, node: str) -> list[str]:
    ids, entries = retention.gone_logs(node, 1000)
    retention.ack_gone_logs(node, entries)
    return ids


def test_delete_removes_every_key_and_index_entry(store: Store) -> None:
    retention = Retention(store)
    keep = run_tree(store)  # another tree: the shared indexes stay, with one entry less
    before = snapshot(store)
    root = run_tree(store)
    jobs = set(store.tree_flat(root))
    assert read_stored(store, root, root) is not None
    assert retention.delete(root) == root
    with pytest.raises(UnknownJobError):
        store.tree_status(root)
    for job in jobs:  # any job id of it: unknown now
        with pytest.raises(UnknownJobError):
            store.job_status(job)
    # The nodes are told which log files to remove, each its own jobs.
    on_n2 = drain_gone_logs(retention, "n2")
    assert len(on_n2) == 1 and set(drain_gone_logs(retention, "n1")) == jobs - set(on_n2)
    assert snapshot(store) == before
    assert store.tree_status(keep)["state"] == "SUCCESS"
    assert tree_counts(store) == (1, 0)


def run_until_done(store: Store, root: str, fail_once: set[str]) -> None:
    """Claim and finish on every node until the tree is done; the jobs in ``fail_once``
    fail their first attempt (they have retries), each job reports progress first."""
    while not store.tree_finished(root):
        claims = [(node, c) for node in ("n1", "n2", "n3") for c in store.claim(root, node, 10)]
        assert claims, "nothing claimable in an unfinished tree"
        for _node, claim in claims:
            assert store.set_progress(root, claim.id, claim.token, 0.5, "half")
            ok = claim.id not in fail_once
            fail_once.discard(claim.id)
            store.finish_many([Finish(root, claim.id, claim.token, ok, "done", None,
                                      log_tail=(4, "tail"))])


def test_delete_removes_what_grafts_retries_and_reruns_added(store: Store) -> None:
    """Every key a living tree gains (grafted children on a node of their own, retry
    attempts, progress, a second run) goes with it, index entries included."""
    Registry(store.client, store.keys).write_record("n3", {"name": "n3"})
    before = snapshot(store)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": "n2", "retries": 1, "retry_delay": 0}]}, TAGS)
    _, node, depth, size = store.graft_target(root)
    grafted = parse_graft({"kind": "noop", "node": "n3"}, kind_infos(), root=root,
                          parent=root, parent_node=node, parent_depth=depth, tree_size=size)
    store.graft(root, root, grafted)
    child = next(j for j in store.tree_flat(root) if j not in (root, grafted[0].id))
    run_until_done(store, root, {child, root})  # the root has no retries: FAILED
    assert store.job_status(child)["attempt"] == 2
    assert store.tree_status(root)["state"] == "FAILED"
    store.rerun(root)
    run_until_done(store, root, set())
    assert store.client.zscore(store.keys.runs_on("n3"), root) is not None
    Retention(store).delete(root)
    for node in ("n1", "n2", "n3"):
        Retention(store).ack_gone_logs(node, 10)
    assert snapshot(store) == before


def test_refused_while_running_or_not_done(store: Store) -> None:
    retention = Retention(store)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}]},
                     TAGS)
    before = snapshot(store)
    with pytest.raises(TreeBusyError, match="is not done"):
        retention.delete(root)
    claim = store.claim(root, "n1", 1)[0]
    store.abort(root)  # aborting, but a job still runs
    running = snapshot(store)
    with pytest.raises(TreeBusyError, match="1 RUNNING job"):
        retention.delete(claim.id)
    assert snapshot(store) == running and before != running
    store.finish(root, claim.id, claim.token, True)
    assert store.tree_finished(root)
    retention.delete(claim.id)  # any job of the tree
    with pytest.raises(UnknownJobError):
        retention.delete(root)
    assert tree_counts(store) == (0, 0)


def test_a_deletion_cut_short_is_finished_by_the_next(store: Store) -> None:
    retention = Retention(store)
    before = snapshot(store)
    roots = [run_tree(store) for _ in range(3)]
    # Crash 1: intent written, the tree's script ran, nothing more.
    store.client.zadd(store.keys.deleting, {roots[0]: 1.0, roots[1]: 1.0})
    script = TreeScript(store.client, "delete")
    assert script(store.keys, roots[0], inline=0) == ["ok"]
    # Crash 2: only the intent.
    assert store.client.hexists(store.keys.roots, roots[0])
    with pytest.raises(UnknownJobError):
        store.tree_status(roots[0])
    assert tree_counts(store) == (3, 2)
    # The next delete (of another tree) finishes both.
    retention.delete(roots[2])
    for node in ("n1", "n2"):
        drain_gone_logs(retention, node)
    assert snapshot(store) == before


def age(store: Store, root: str, seconds: float) -> None:
    """Pretend the tree was created and finished ``seconds`` earlier than it was."""
    meta = store.keys.tree_key(root, "meta")
    store.client.hset(meta, "finished", repr(float(store.client.hget(meta, "finished"))
                                             - seconds))
    store.client.zincrby(store.keys.trees, -seconds, root)


def test_prune_by_finish_time_dry_run_and_archive(store: Store) -> None:
    retention = Retention(store)
    old = [run_tree(store, tags={"workspace": f"w{i}"}) for i in range(3)]
    recent = run_tree(store)
    running, _ = submit(store, {"kind": "sleep", "node": "n1", "params": {"seconds": 1}})
    store.claim(running, "n1", 1)
    for root in old:
        age(store, root, 7200)
    dry = retention.prune(3600, dry_run=True)
    assert dry.dry_run and sorted(dry.trees) == sorted(old)
    assert tree_counts(store) == (5, 0)  # nothing deleted
    archived: dict[str, Any] = {}
    result = retention.prune(3600, archive=lambda r: archived.setdefault(
        r, store.tree_status(r)), batch=2)
    assert sorted(result.trees) == sorted(old) == sorted(archived)
    assert archived[old[0]]["tags"] == {"workspace": "w0"}
    assert len(archived[old[0]]["children"]) == 2
    assert tree_counts(store) == (2, 0)
    assert not store.client.zcard(store.keys.tag("workspace", "w0"))
    # Not old enough, or not done: kept.
    assert retention.prune(3600).trees == []
    assert sorted(retention.prune(0).trees) == [recent]
    assert store.job_state(running) == "RUNNING"


def test_prune_pages_through_many_trees(store: Store) -> None:
    from jobgrove.messaging import retention as module

    module_page = module.PAGE
    module.PAGE = 7  # pages of 7: ties at a page's end and partial pages
    try:
        roots = [run_tree(store, tags=None) for _ in range(20)]
        created = store.keys.trees
        store.client.zadd(created, {r: 1000.0 for r in roots[5:12]})  # one score, 7 trees
        assert sorted(Retention(store).prune(0, dry_run=True).trees) == sorted(roots)
        assert sorted(Retention(store).prune(0, batch=3).trees) == sorted(roots)
    finally:
        module.PAGE = module_page
    assert tree_counts(store) == (0, 0)


def test_the_retention_lock_is_held_by_one_node_at_a_time(store: Store) -> None:
    retention = Retention(store)
    assert retention.lock("n1", 5)
    assert not retention.lock("n2", 5)
    assert not retention.relock("n2", 5) and retention.relock("n1", 5)
    retention.unlock("n2")  # not its lock: nothing happens
    assert not retention.lock("n2", 5)
    retention.unlock("n1")
    assert retention.lock("n2", 5)


def test_a_late_report_does_not_bring_a_deleted_tree_back(store: Store) -> None:
    before = snapshot(store)
    root = run_tree(store)
    Retention(store).delete(root)
    for node in ("n1", "n2"):
        drain_gone_logs(Retention(store), node)
    # A stale process reports a job of the deleted tree, with its log's end.
    outcome = store.finish_many([Finish(root, root, "old-token", True,
                                        log_tail=(3, "abc"))])[0]
    assert outcome.verdict == "stale"
    assert snapshot(store) == before
    assert json.dumps(before)  # (plain data)


def test_forget_refuses_a_live_node_and_one_with_jobs_running(store: Store) -> None:
    retention = Retention(store)
    registry = Registry(store.client, store.keys)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "node": "n2"}]})
    store.claim(root, "n2", 1)  # n2 runs a job, then its process is gone (no lease)
    with pytest.raises(NodeBusyError, match="1 RUNNING job"):
        retention.forget_node(registry, "n2")
    store.client.set(store.keys.lease("n1"), "a live process", px=5000)
    with pytest.raises(NodeBusyError, match="node n1 is up"):
        retention.forget_node(registry, "n1")
    store.reap(root, "n2", "node n2 lost (lease expired)")  # the tree aborts: done
    retention.forget_node(registry, "n2")
    assert registry.record("n2") is None
    with pytest.raises(JobgroveError, match="no node named 'n2'"):
        retention.forget_node(registry, "n2")
