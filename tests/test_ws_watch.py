"""Tree watch: its start-up (the tree is read again once its pub/sub channel is live),
after a lost pub/sub connection; /health while Redis is down."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from websockets.sync.client import connect as ws_connect

from jobgrove.endpoint import app as endpoint
from jobgrove.messaging.pubsub import Listener
from tests.helpers import RedisServer, wait_for
from tests.ws_helpers import Cluster, cluster_of, recv_json, until


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def record_reads(ep: endpoint.Endpoint, monkeypatch: pytest.MonkeyPatch,
                 events: list[tuple[str, Any]]) -> None:
    """Append ``(what, arg)`` to ``events`` as the endpoint's lookup thread finishes each
    Redis read for the log-broadcast actor (``snapshot`` of a tree, ``states``) and has
    told the actor what it read."""
    lookups = ep._lookups
    assert lookups is not None
    do = lookups._do

    def recorded(what: str, arg: Any) -> None:
        do(what, arg)
        events.append((what, arg))

    monkeypatch.setattr(lookups, "_do", recorded)


def ghost_tree(cluster: Cluster) -> str:
    """A tree for a node that never runs: nothing changes it but the test."""
    return cluster.client.submit({"kind": "noop", "node": "ghost"}, allow_unknown_node=True)


def test_watch_catches_up_after_the_pubsub_connection_drops(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    a = cluster.add("a")
    assert a is not None
    reads: list[tuple[str, Any]] = []
    record_reads(a, monkeypatch, reads)
    root = ghost_tree(cluster)
    raw = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    key = cluster.client.keys.tree_key
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "watch", "tree": root}))
        assert until(ws, "tree")["tree"]["state"] == "WAITING"
        wait_for(lambda: ("snapshot", root) in reads, what="the read once subscribed")
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


class _FakeRedis:
    """What ``Listener`` uses of a Redis client: pub/sub connections that record what
    they send in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def pubsub(self, **_: Any) -> _FakePubSub:
        return _FakePubSub(self.sent)


class _FakePubSub:

    def __init__(self, sent: list[tuple[str, str]]) -> None:
        self.sent = sent

    def subscribe(self, *channels: str) -> None:
        self.sent.extend(("subscribe", c) for c in channels)

    def unsubscribe(self, *channels: str) -> None:
        self.sent.extend(("unsubscribe", c) for c in channels)

    def get_message(self, timeout: float) -> None:
        time.sleep(min(timeout, 0.01))

    def close(self) -> None:
        pass


def test_listener_calls_on_subscribed_right_after_the_subscription_is_sent() -> None:
    client = _FakeRedis()
    sent = client.sent
    up = threading.Event()
    listener = Listener(client, ["node"], lambda *_: None, up.set, lambda _: None,
                        name="jg-test-pubsub")
    calls: queue.SimpleQueue[list[tuple[str, str]]] = queue.SimpleQueue()
    listener.start()
    try:
        assert up.wait(5)
        listener.subscribe("tree", lambda: calls.put(list(sent)))
        assert calls.get(timeout=5) == [("subscribe", "node"), ("subscribe", "tree")]
        # Already subscribed: called without sending anything again.
        listener.subscribe("tree", lambda: calls.put(list(sent)))
        assert calls.get(timeout=5) == [("subscribe", "node"), ("subscribe", "tree")]

        def broken() -> None:
            raise RuntimeError("the owner's bug")

        # A failing callback costs neither the connection nor the changes queued after it.
        listener.subscribe("other", broken)
        listener.unsubscribe("tree")
        listener.subscribe("last", lambda: calls.put(list(sent)))
        assert calls.get(timeout=5) == [("subscribe", "node"), ("subscribe", "tree"),
                                        ("subscribe", "other"), ("unsubscribe", "tree"),
                                        ("subscribe", "last")]
    finally:
        listener.stop()


def test_a_change_right_after_watch_is_read_once_the_channel_is_live(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree's channel subscription is held back while the tree changes, so its
    status event reaches nobody; the read made right after the subscription is sent
    (not a timer) brings the change."""
    events: list[tuple[str, Any]] = []
    release = threading.Event()

    class Recorded:
        def __init__(self, pubsub: Any) -> None:
            self._pubsub = pubsub

        def subscribe(self, *channels: str) -> None:
            events.extend(("subscribe", c) for c in channels)
            self._pubsub.subscribe(*channels)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._pubsub, name)

    class HeldListener(Listener):
        def _apply_changes(self, pubsub: Any) -> None:
            if release.is_set():
                super()._apply_changes(Recorded(pubsub))

    monkeypatch.setattr(endpoint, "Listener", HeldListener)
    a = cluster.add("a")
    assert a is not None
    record_reads(a, monkeypatch, events)
    keys = cluster.client.keys
    raw = redis.Redis.from_url(cluster.redis_url, decode_responses=True)
    wait_for(lambda: raw.pubsub_numsub(f"{keys.channel_prefix}endpoint:a")[0][1] == 1,
             what="the endpoint's listener up")
    root = ghost_tree(cluster)
    channel = keys.tree_channel(root)
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "watch", "tree": root}))
        assert until(ws, "tree")["tree"]["state"] == "WAITING"
        assert raw.pubsub_numsub(channel) == [(channel, 0)]
        cluster.client.abort(root)  # published while nobody listens on the channel
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.8)  # longer than the old 0.5 s re-read: none comes
        release.set()
        frame = until(ws, "status", timeout=5)
    assert frame["job"] == root and frame["state"] == "ABORTED"
    assert [e for e in events if e[1] in (root, channel)] == \
        [("subscribe", channel), ("snapshot", root)]
