"""Containment and fencing in the store's scripts, against real Redis and fakeredis: a
record that cannot be read fails its job and aborts its tree (the tree always ends);
claims and outcomes of a process that lost its node name are refused."""

from __future__ import annotations

from typing import Any

import pytest

from jobgrove.errors import FencedError
from jobgrove.messaging.records import Holder, Verdict
from jobgrove.messaging.store import Store
from tests.store_helpers import make_store, submit

OLD = Holder("n1", "old-instance", 1)
NEW = Holder("n1", "new-instance", 2)


def leaf_and_parent(store: Store) -> tuple[str, str, str]:
    """A root with a parent of one leaf, plus a sibling leaf: (root, parent, leaf)."""
    root, _ = submit(store, {"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "children": [{"kind": "noop"}]}, {"kind": "noop"}]})
    flat = store.tree_flat(root)
    parent = next(i for i, j in flat.items() if j["parent"] == root and j["child_ids"])
    leaf = flat[parent]["child_ids"][0]
    return root, parent, leaf


def ended_as_corrupt(store: Store, root: str, job: str) -> dict[str, Any]:
    flat = store.tree_flat(root)
    assert flat[job]["state"] == "FAILED", flat[job]
    assert (flat[job]["summary"] or "").startswith("corrupt record: "), flat[job]
    assert store.tree_finished(root), {i: j["state"] for i, j in flat.items()}
    assert flat[root]["state"] == "ABORTED"
    return flat


def drain(store: Store, root: str, holder: Holder = OLD) -> None:
    """Finish whatever can still be claimed (the tree has aborted: nothing, normally)."""
    for claim in store.claim(root, "n1", 100, holder):
        store.finish(root, claim.id, claim.token, True, holder=holder)


def test_a_spec_that_does_not_decode_fails_its_job(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    store.client.hset(store.keys.tree_key(root, "spec"), leaf, "{not json")
    claims = store.claim(root, "n1", 100, OLD)
    assert leaf not in {c.id for c in claims}
    for claim in claims:  # the sibling leaf was claimed before: its node reports it
        store.finish(root, claim.id, claim.token, True, holder=OLD)
    ended_as_corrupt(store, root, leaf)


def test_a_state_that_is_no_state_fails_its_job(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    store.client.hset(store.keys.tree_key(root, "state"), leaf, "GARBAGE")
    for claim in store.claim(root, "n1", 100, OLD):
        store.finish(root, claim.id, claim.token, True, holder=OLD)
    ended_as_corrupt(store, root, leaf)


def test_a_state_damaged_while_the_job_ran_fails_it_when_it_ends(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    store.client.hset(store.keys.tree_key(root, "state"), leaf, "BOGUS")
    outcome = store.finish(root, leaf, claims[leaf].token, True, holder=OLD)
    assert (outcome.verdict, outcome.state) == (Verdict.OK, "FAILED")
    drain(store, root)
    for job_id, claim in claims.items():  # the sibling ends ABORTED (its tree aborted)
        if job_id != leaf:
            store.finish(root, job_id, claim.token, True, holder=OLD)
    ended_as_corrupt(store, root, leaf)


@pytest.mark.parametrize("damage", ["parent node", "parent state", "pending count"])
def test_a_damaged_parent_fails_it_after_its_child_succeeded(backend: Any,
                                                             damage: str) -> None:
    store = make_store(backend)
    root, parent, leaf = leaf_and_parent(store)
    key = store.keys.tree_key
    if damage == "parent node":
        store.client.hdel(key(root, "node"), parent)
    elif damage == "parent state":
        store.client.hset(key(root, "state"), parent, "???")
    else:
        store.client.hset(key(root, "pending"), parent, "many")
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    outcome = store.finish(root, leaf, claims[leaf].token, True, holder=OLD)
    assert outcome.verdict is Verdict.OK and outcome.state == "SUCCESS"
    for job_id, claim in claims.items():
        if job_id != leaf:
            store.finish(root, job_id, claim.token, True, holder=OLD)
    flat = ended_as_corrupt(store, root, parent)
    assert flat[leaf]["state"] == "SUCCESS"  # what was read fine was recorded


def test_a_running_job_without_its_claim_record_fails(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    store.client.hdel(store.keys.tree_key(root, "token"), leaf)
    outcome = store.finish(root, leaf, claims[leaf].token, True, holder=OLD)
    assert outcome.state == "FAILED"
    for job_id, claim in claims.items():
        if job_id != leaf:
            store.finish(root, job_id, claim.token, True, holder=OLD)
    ended_as_corrupt(store, root, leaf)


def test_a_lost_claim_with_an_unreadable_spec_fails_instead_of_running(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    store.client.hset(store.keys.tree_key(root, "spec"), leaf, "[1, 2")
    assert store.reclaim(root, leaf, OLD) is None
    for job_id, claim in claims.items():
        if job_id != leaf:
            store.finish(root, job_id, claim.token, True, holder=OLD)
    ended_as_corrupt(store, root, leaf)


# -- fencing ------------------------------------------------------------------------------
def test_claims_of_an_older_epoch_are_refused_once_a_newer_one_was_seen(backend: Any) -> None:
    store = make_store(backend)
    root, _, _ = leaf_and_parent(store)
    (first,) = store.claim(root, "n1", 1, OLD)
    assert store.claim(root, "n1", 1, NEW)  # the newer process
    with pytest.raises(FencedError):
        store.claim(root, "n1", 1, OLD)
    # The old process's outcome is refused too, and changes nothing.
    outcome = store.finish(root, first.id, first.token, True, holder=OLD)
    assert outcome.verdict is Verdict.FENCED
    assert store.job_state(first.id) == "RUNNING"
    # Another node's epochs are its own business.
    other = Holder("n2", "x", 0)
    assert store.claim(root, "n2", 1, other) == []


def test_an_outcome_is_taken_only_from_the_claiming_instance(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    twin = Holder("n1", "same-epoch-other-instance", OLD.epoch)
    outcome = store.finish(root, leaf, claims[leaf].token, True, holder=twin)
    assert outcome.verdict is Verdict.FENCED
    assert store.finish(root, leaf, claims[leaf].token, True, holder=OLD).verdict is Verdict.OK


def test_reaping_spares_the_live_instance_and_respects_newer_epochs(backend: Any) -> None:
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n2", "children": [
        {"kind": "noop", "node": "n1"}, {"kind": "noop", "node": "n1"}]})
    (old_claim,) = store.claim(root, "n1", 1, OLD)
    # A reaper that only knows epoch 1 of n1 reaps nothing once epoch 2 used the tree.
    (new_claim,) = store.claim(root, "n1", 1, NEW)
    assert store.reap(root, "n1", "node n1 lost", upto=1) == []
    # The new process ends its predecessor's job and keeps its own.
    assert store.reap(root, "n1", "restarted", spare=NEW.instance, epoch=NEW.epoch) \
        == [old_claim.id]
    assert store.job_state(new_claim.id) == "RUNNING"
    assert store.job_state(old_claim.id) == "FAILED"


def test_failing_an_unrecordable_outcome_ends_only_that_claim(backend: Any) -> None:
    """What a node does with an outcome Redis refused (``Store.fail`` with its claim): a
    report of an older claim (a retried job, a process fenced off) ends nothing."""
    store = make_store(backend)
    root, _ = submit(store, {"kind": "noop", "node": "n1", "retries": 1, "retry_delay": 0})
    (first,) = store.claim(root, "n1", 1, OLD)
    assert store.finish(root, root, first.token, False, "boom", holder=OLD).state == "WAITING"
    (second,) = store.claim(root, "n1", 1, NEW)
    stale = store.fail(root, root, "corrupt record: x", (first.token, OLD))
    assert (stale.verdict, stale.state) == (Verdict.STALE, "RUNNING")
    assert store.fail(root, root, "corrupt record: x", (second.token, OLD)).verdict \
        is Verdict.STALE  # the right token, from another process
    ended = store.fail(root, root, "corrupt record: x", (second.token, NEW))
    assert (ended.verdict, ended.state) == (Verdict.OK, "FAILED")
    assert store.tree_finished(root)


def test_failing_a_job_of_an_aborting_tree_ends_it_aborted(backend: Any) -> None:
    store = make_store(backend)
    root, _, leaf = leaf_and_parent(store)
    claims = {c.id: c for c in store.claim(root, "n1", 100, OLD)}
    sibling = next(i for i in claims if i != leaf)
    store.abort(sibling)  # the leaf, RUNNING, is flagged
    ended = store.fail(root, leaf, "corrupt record: x", (claims[leaf].token, OLD))
    assert (ended.verdict, ended.state) == (Verdict.OK, "ABORTED")
