"""Tree watch after a lost pub/sub connection, and /health while Redis is down."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import redis
from websockets.sync.client import connect as ws_connect

from tests.helpers import RedisServer, wait_for
from tests.test_ws_wire import Cluster, cluster_of, recv_json, until


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def test_watch_catches_up_after_the_pubsub_connection_drops(cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a is not None and a._lookups is not None
    # A tree for a node that never runs: nothing changes it but this test.
    root = cluster.client.submit({"kind": "noop", "node": "ghost"}, allow_unknown_node=True)
    raw = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    key = cluster.client.keys.tree_key
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "watch", "tree": root}))
        assert until(ws, "tree")["tree"]["state"] == "WAITING"
        lookups = a._lookups
        wait_for(lambda: not lookups._queue, what="the settling re-read")
        # Changes Redis holds but nobody published: a listener that was away missed them.
        added = str(uuid.uuid4())
        raw.hset(key(root, "state"), mapping={root: "ABORTED", added: "WAITING"})
        raw.hset(key(root, "spec"), added, json.dumps({"id": added, "kind": "noop",
                                                      "children": []}))
        raw.hset(key(root, "node"), added, "ghost")
        raw.hset(key(root, "parent"), added, root)
        spec = json.loads(raw.hget(key(root, "spec"), root) or "{}")
        raw.hset(key(root, "spec"), root, json.dumps({**spec, "children": [added]}))
        raw.client_kill_filter(_type="pubsub")
        tree = until(ws, "tree")["tree"]
    assert tree["state"] == "ABORTED"
    assert [child["id"] for child in tree["children"]] == [added]


def test_health_reports_redis_down_and_back(own_redis: RedisServer, log_dir: str) -> None:
    cluster = Cluster(own_redis.url, log_dir)
    try:
        a = cluster.add("a")
        assert a is not None
        url = f"http://{a.address}/health"

        def redis_state() -> str:
            with urllib.request.urlopen(url, timeout=10) as res:
                return str(json.load(res)["redis"])

        assert redis_state() == "ok"
        own_redis.stop()
        wait_for(lambda: redis_state() == "unavailable", timeout=10, what="redis down")
        with ws_connect(f"ws://{a.address}/ws") as ws:
            ws.send(json.dumps({"type": "subscribe", "job": str(uuid.uuid4())}))
            assert recv_json(ws, timeout=15)["code"] == "unavailable"
        own_redis.start()
        wait_for(lambda: redis_state() == "ok", timeout=15, what="redis back")
    finally:
        cluster.close()
