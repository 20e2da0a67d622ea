"""A batch of outcomes (``Store.finish_many``): one script run per tree, each job on its
own inside it. A Lua error in one item costs only that item (nothing of it is lost: a
later finish records it); an error meaning Redis cannot serve now is an outage."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from jobgrove.errors import StoreUnavailableError
from jobgrove.messaging.records import Finish, Verdict
from jobgrove.messaging.store import Store
from tests.helpers import RedisServer
from tests.store_helpers import make_store, submit


def running_leaves(store: Store, n: int) -> tuple[str, dict[str, str]]:
    """A root with ``n`` leaves, all claimed: (root, {leaf id: run token})."""
    root, _ = submit(store, {"kind": "noop", "node": "n1",
                             "children": [{"kind": "noop"} for _ in range(n)]})
    claims = store.claim(root, "n1", 100)
    assert len(claims) == n
    return root, {c.id: c.token for c in claims}


def calls(store: Store, command: str) -> int:
    """How many times Redis ran ``command`` (INFO commandstats)."""
    stats = store.client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_one_failing_item_costs_only_itself(backend: Any) -> None:
    store = make_store(backend)
    root, tokens = running_leaves(store, 3)
    leaves = list(tokens)
    # Results of this tree cannot be written: only the item carrying a result touches them.
    store.client.set(store.keys.tree_key(root, "results"), "not a hash")
    items = [Finish(root, leaf, tokens[leaf], True, result={"n": 1} if i == 1 else None)
             for i, leaf in enumerate(leaves)]
    outcomes = store.finish_many(items)
    assert [o.verdict for o in outcomes] == [Verdict.OK, Verdict.ERROR, Verdict.OK], outcomes
    assert "WRONGTYPE" in outcomes[1].state, outcomes[1]  # an ERROR's text
    states = store.client.hmget(store.keys.tree_key(root, "state"), leaves)
    assert states == ["SUCCESS", "RUNNING", "SUCCESS"]
    # Nothing of the failed item was lost: once Redis can take it, it is recorded.
    store.client.delete(store.keys.tree_key(root, "results"))
    again = store.finish_many([items[1]])
    assert again[0].verdict is Verdict.OK and again[0].state == "SUCCESS", again
    assert store.tree_flat(root)[root]["state"] == "WAITING"
    assert store.results(root, [leaves[1]]) == {leaves[1]: {"n": 1}}


def test_a_tree_batch_is_one_script_run(redis_url: str) -> None:
    store = make_store(redis_url)
    first, first_tokens = running_leaves(store, 5)
    second, second_tokens = running_leaves(store, 4)
    items = [Finish(first, leaf, token, True) for leaf, token in first_tokens.items()]
    items += [Finish(second, leaf, token, True) for leaf, token in second_tokens.items()]
    before = calls(store, "evalsha")
    outcomes = store.finish_many(items)
    assert calls(store, "evalsha") - before == 2  # one per tree, not one per job
    assert all(o.verdict is Verdict.OK for o in outcomes), outcomes
    assert store.tree_flat(first)[first]["state"] == "WAITING"
    assert store.tree_flat(second)[second]["state"] == "WAITING"


@pytest.mark.timeout(30)
def test_out_of_memory_is_an_outage_and_loses_nothing(own_redis: RedisServer) -> None:
    store = make_store(own_redis.url)
    root, tokens = running_leaves(store, 2)
    items = [Finish(root, leaf, token, True, summary="done")
             for leaf, token in tokens.items()]
    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        with pytest.raises(StoreUnavailableError, match="OOM"):
            store.finish_many(items)
    finally:
        admin.config_set("maxmemory", "0")
    outcomes = store.finish_many(items)  # what a node does once Redis serves again
    assert [o.state for o in outcomes] == ["SUCCESS", "SUCCESS"], outcomes
    assert store.tree_flat(root)[root]["state"] == "WAITING"


def finish_tree(store: Store, root: str, tokens: dict[str, str]) -> None:
    store.finish_many([Finish(root, leaf, token, True) for leaf, token in tokens.items()])
    (parent,) = store.claim(root, "n1", 10)
    store.finish(root, root, parent.token, True)


def test_status_events_are_published_only_to_watchers(redis_url: str) -> None:
    store = make_store(redis_url)
    root, tokens = running_leaves(store, 2)
    before = calls(store, "publish")
    finish_tree(store, root, tokens)
    unwatched = calls(store, "publish") - before
    # A watcher of the tree (as an endpoint subscribes per watched tree).
    watcher = store.client.pubsub(ignore_subscribe_messages=True)
    root, tokens = running_leaves(store, 2)
    watcher.subscribe(store.keys.tree_channel(root))
    before = calls(store, "publish")
    finish_tree(store, root, tokens)
    watched = calls(store, "publish") - before
    events = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not any(
            e["type"] == "done" for e in events):
        message = watcher.get_message(timeout=0.2)  # None for the subscribe reply too
        if message is not None:
            events.append(json.loads(message["data"]))
    watcher.close()
    statuses = [(e["job"], e["state"]) for e in events if e["type"] == "status"]
    assert (root, "SUCCESS") in statuses and len(statuses) >= 5, events
    # The same steps unwatched published the same but for the status events.
    assert watched - unwatched == len(statuses), (unwatched, watched, events)
