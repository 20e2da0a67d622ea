"""Writing a new tree, as steps that each touch one hash slot (so it works on Redis
Cluster), in an order that keeps every crash between them harmless:

1. The tree's clock: ``TIME`` of the server holding the tree (its shard).
2. The cross-tree index entries (the id index ``ids`` and ``roots``, ``trees``, tags,
   ``runs_on``, the nodes' tree sets): separate keys, each write idempotent. Before the
   tree, so that a tree that exists is always indexed and always known to its nodes.
   A crash after this step leaves entries of a tree that does not exist: every read
   skips them (a listed root without keys, an id whose root has no state: unknown),
   and nodes forget such a tree after a while (``Upkeep``).
3. The tree itself: one ``MULTI``/``EXEC`` over its own keys (one slot, ``{root}``).
   This is the commit: from now on nodes may claim its jobs.
4. The hints: the nodes' tree sets again (idempotent: a node that forgot the tree while
   step 3 was delayed learns of it again), then a ``ready`` message to each node with
   runnable jobs. Lost hints only delay: nodes re-read their trees every few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from jobgrove.core.spec import JobSpec
from jobgrove.core.states import State
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.topology import is_cluster, server_time

_CHUNK = 2000  # fields per command, so a 100,000-job submit is not one giant command


def submit_tree(client: Any, keys: Keys, jobs: list[JobSpec], tags: dict[str, str],
                spec_json: Any) -> str:
    """Store a validated tree (``jobs[0]`` is its root) and tell its nodes."""
    root = jobs[0].id
    now = server_time(client, keys.tree_key(root, "meta"))
    nodes = sorted({j.node for j in jobs})
    _index(client, keys, root, now, jobs, nodes, tags)
    leaves = _commit(client, keys, root, now, jobs, nodes, tags, spec_json)
    _hint(client, keys, root, nodes, leaves)
    return root


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _index(client: Any, k: Keys, root: str, now: float, jobs: list[JobSpec],
           nodes: list[str], tags: dict[str, str]) -> None:
    pipe = client.pipeline(transaction=False)
    for chunk in _chunks(jobs):
        pipe.hset(k.roots, mapping={j.id: root for j in chunk})
        pipe.zadd(k.ids, {j.id: 0 for j in chunk})
    for node in nodes:
        pipe.sadd(k.node_trees(node), root)
        pipe.zadd(k.runs_on(node), {root: now})
    for key, value in tags.items():
        pipe.zadd(k.tag(key, value), {root: now})
    pipe.zadd(k.trees, {root: now})
    pipe.execute()


def _commit(client: Any, k: Keys, root: str, now: float, jobs: list[JobSpec],
            nodes: list[str], tags: dict[str, str], spec_json: Any) -> list[str]:
    """The tree's own keys in one transaction. Returns the nodes with runnable jobs."""
    pipe = client.pipeline(transaction=True)

    def hset_chunks(part: str, items: list[tuple[str, Any]]) -> None:
        for chunk in _chunks(items):
            pipe.hset(k.tree_key(root, part), mapping=dict(chunk))

    hset_chunks("spec", [(j.id, spec_json(j)) for j in jobs])
    hset_chunks("state", [(j.id, State.NEW if j.children else State.WAITING) for j in jobs])
    hset_chunks("node", [(j.id, j.node) for j in jobs])
    hset_chunks("parent", [(j.id, j.parent) for j in jobs if j.parent])
    hset_chunks("pending", [(j.id, len(j.children)) for j in jobs if j.children])
    for chunk in _chunks(jobs):
        pipe.sadd(k.tree_key(root, "open"), *(j.id for j in chunk))
    leaves: dict[str, list[str]] = {}
    for j in jobs:
        if not j.children:
            leaves.setdefault(j.node, []).append(j.id)
    # Deepest leaves first: the order within a node's ready list is the start order.
    for node, ids in leaves.items():
        for chunk in _chunks(ids):
            pipe.rpush(k.ready(root, node), *chunk)
    pipe.sadd(k.tree_key(root, "nodes"), *nodes)
    pipe.hset(k.tree_key(root, "meta"), mapping={
        "root": root, "title": jobs[0].title, "created": repr(now),
        "tags": json.dumps(tags), "size": len(jobs)})
    pipe.execute()
    return list(leaves)


def _hint(client: Any, k: Keys, root: str, nodes: list[str], leaves: list[str]) -> None:
    hint = json.dumps({"t": "ready", "root": root})
    pipe = client.pipeline(transaction=False)
    for node in nodes:
        pipe.sadd(k.node_trees(node), root)
    if not is_cluster(client):
        for node in leaves:
            pipe.publish(k.node_channel(node), hint)
    pipe.execute()
    if is_cluster(client):
        # A cluster pipeline refuses PUBLISH (it has no key to route by); any node
        # takes it and the cluster bus carries it to every node.
        for node in leaves:
            client.publish(k.node_channel(node), hint)
