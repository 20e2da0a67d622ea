"""Helpers shared by the store's contract tests."""

from __future__ import annotations

from typing import Any

from jobgrove.core.model import TreeModel
from jobgrove.core.spec import parse_spec
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.store import Store

NODES = ("n1", "n2")


def make_store(backend: Any) -> Store:
    client = connect(backend) if isinstance(backend, str) else decoded(backend)
    return Store(client)


def submit(store: Store, spec: dict[str, Any], tags: dict[str, str] | None = None
           ) -> tuple[str, TreeModel]:
    if tags:
        spec = {**spec, "tags": tags}
    jobs, parsed_tags = parse_spec(spec, kind_infos())
    root = store.submit(jobs, parsed_tags)
    assert root == jobs[0].id
    return root, TreeModel(jobs)


def snapshot(store: Store, root: str) -> dict[str, tuple[str, Any]]:
    """Every key of the tree with its type and value (for ``rollback``)."""
    client = store.client
    out: dict[str, tuple[str, Any]] = {}
    for key in client.scan_iter(match=f"{store.keys.tree(root)}:*"):
        kind = client.type(key)
        value = {"hash": client.hgetall, "set": client.smembers,
                 "list": lambda k: client.lrange(k, 0, -1),
                 "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
                 "string": client.get}[kind](key)
        out[key] = (kind, value)
    return out


def rollback(store: Store, root: str, snap: dict[str, tuple[str, Any]]) -> None:
    """The tree as it was at ``snapshot``: what a replica promoted in a failover holds
    when the last transitions had not reached it."""
    client = store.client
    for key in list(client.scan_iter(match=f"{store.keys.tree(root)}:*")):
        client.delete(key)
    for key, (kind, value) in snap.items():
        if kind == "hash":
            client.hset(key, mapping=value)
        elif kind == "set":
            client.sadd(key, *value)
        elif kind == "list":
            client.rpush(key, *value)
        elif kind == "zset":
            client.zadd(key, dict(value))
        else:
            client.set(key, value)
