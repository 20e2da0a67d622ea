"""What Redis 7.0, redis-py's cluster client and fakeredis do with what jobgrove needs
(issue 11's groundwork): scripts and hash slots, pipelines, classic and sharded pub/sub,
a node lost under a subscriber. Each test pins an observed behaviour that the
single-slot store builds on; docs/scaling.md (For developers) sums them up.

Skipped unless JOBGROVE_SCALE_PROBE=1 (exploratory, and a cluster costs seconds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.exceptions import CrossSlotTransactionError, NoScriptError, RedisClusterException

from jobgrove.messaging.connection import connect, fake_client, fake_server
from jobgrove.messaging.pubsub import Listener
from jobgrove.messaging.store import Store
from tests.helpers import wait_for
from tests.servers import ClusterSetup, env_flag

pytestmark = [
    pytest.mark.skipif(not env_flag("JOBGROVE_SCALE_PROBE"),
                       reason="exploratory; set JOBGROVE_SCALE_PROBE=1"),
    pytest.mark.redis, pytest.mark.timeout(60)]
META = "jg:{r1}:meta"  # a tree's key: its slot is the tree's


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterSetup]:
    with ClusterSetup() as setup:
        yield setup


@pytest.fixture
def client(cluster: ClusterSetup) -> RedisCluster:
    c = connect(cluster.url)
    assert isinstance(c, RedisCluster)
    c.flushall()
    return c


def key_on(cluster: ClusterSetup, client: RedisCluster, *, same_node_as: str,
           same: bool) -> str:
    """A key in another slot than ``same_node_as``, on (or not on) the same node."""
    node = cluster.primary_for(same_node_as)
    return next(k for k in (f"k{i}" for i in range(5000))
                if client.keyslot(k) != client.keyslot(same_node_as)
                and (cluster.primary_for(k) is node) == same)


def drain(pubsub: Any, seconds: float, sharded: bool = False) -> list[tuple[str, str, str]]:
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        read = pubsub.get_sharded_message if sharded else pubsub.get_message
        message = read(ignore_subscribe_messages=True, timeout=0.05)
        if message:
            got.append((message["type"], message["channel"], message["data"]))
    return got


def test_scripts_and_slots(cluster: ClusterSetup, client: RedisCluster) -> None:
    near = key_on(cluster, client, same_node_as=META, same=True)
    far = key_on(cluster, client, same_node_as=META, same=False)
    touch = "return redis.call('SET', '{}', 'x')"
    # Undeclared keys of the declared key's slot: fine (what jobgrove's scripts do).
    assert client.eval(touch.format("jg:{r1}:state"), 1, META) == "OK"
    # Without a shebang (eval compat mode) another slot on the same node works too...
    assert client.eval(touch.format(near), 1, META) == "OK"
    # ...and only a key on another node fails: slips show by chance of placement.
    with pytest.raises(redis.ResponseError, match="non local key"):
        client.eval(touch.format(far), 1, META)
    # With `#!lua` Redis checks the slot whatever the placement.
    with pytest.raises(redis.ResponseError, match="do not hash to the same slot"):
        client.eval("#!lua\n" + touch.format(near), 1, META)
    # fakeredis (the embedded mode) cannot load a shebang, and checks no slots.
    fake = fake_client(fake_server())
    with pytest.raises(redis.ResponseError, match="unexpected symbol"):
        fake.eval("#!lua\nreturn 1", 0)
    assert fake.eval(touch.format(far), 1, META) == "OK"


def test_publish_from_scripts(cluster: ClusterSetup, client: RedisCluster) -> None:
    other = next(n for n in cluster.primaries() if n is not cluster.primary_for(META))
    listener = other.client().pubsub()
    listener.subscribe("jg:ch:node:n1")
    drain(listener, 0.1)
    # Classic PUBLISH from a script reaches a subscriber on any node (the bus broadcasts).
    client.eval("return redis.call('PUBLISH', 'jg:ch:node:n1', 'hi')", 1, META)
    assert drain(listener, 1.0) == [("message", "jg:ch:node:n1", "hi")]
    # SPUBLISH is keyed by its channel: fine on a channel in the tree's slot, refused on
    # a channel of another node's slot (today's channels carry no {root} tag).
    assert client.eval("return redis.call('SPUBLISH', 'jg:ch:{r1}:tree', 'x')", 1, META) == 0
    far = key_on(cluster, client, same_node_as=META, same=False)
    with pytest.raises(redis.ResponseError, match="non local key"):
        client.eval(f"return redis.call('SPUBLISH', '{far}', 'x')", 1, META)


def test_cluster_pipelines(client: RedisCluster) -> None:
    tx = client.pipeline(transaction=True)
    tx.hset("jg:{r1}:state", "a", "WAITING")
    tx.hset("jg:root", "a", "r1")
    with pytest.raises(CrossSlotTransactionError) as info:
        tx.execute()
    # Not a RedisError: translate_errors lets it through untranslated.
    assert not isinstance(info.value, redis.RedisError)
    pipe = client.pipeline(transaction=False)
    for name, args in (("publish", ("ch", "x")), ("evalsha", ("0" * 40, 0))):
        with pytest.raises(RedisClusterException, match="blocked") as blocked:
            getattr(pipe, name)(*args)
        assert not isinstance(blocked.value, redis.RedisError)
    # One slot in a MULTI, SPUBLISH on a channel of that slot included: fine.
    tx = client.pipeline(transaction=True)
    tx.hset("jg:{r1}:state", "a", "WAITING")
    tx.spublish("jg:ch:{r1}:tree", "x")
    assert tx.execute() == [1, 0]
    # EVALSHA through execute_command is routed by its key; NOSCRIPT comes per reply;
    # SCRIPT LOAD reaches every primary.
    sha = client.script_load("return redis.call('HGET', KEYS[1], ARGV[1])")
    pipe = client.pipeline(transaction=False)
    for root in ("r1", "r2", "r3", "r4"):
        pipe.execute_command("EVALSHA", sha, 1, f"jg:{{{root}}}:state", "a")
    assert pipe.execute() == ["WAITING", None, None, None]
    client.script_flush()
    for root in ("r1", "r2"):
        pipe.execute_command("EVALSHA", sha, 1, f"jg:{{{root}}}:state", "a")
    assert [type(r) for r in pipe.execute(raise_on_error=False)] == [NoScriptError] * 2
    assert client.script_load("return redis.call('HGET', KEYS[1], ARGV[1])") == sha
    assert client.script_exists(sha) == [True]
    # A non-transactional pipeline across slots is split per node.
    pipe = client.pipeline(transaction=False)
    for i in range(10):
        pipe.set(f"x{i}", i)
    assert pipe.execute() == [True] * 10


def test_sharded_pubsub(client: RedisCluster) -> None:
    channels = [f"jg:ch:{{r{i}}}:tree" for i in range(1, 4)]
    pubsub = client.pubsub()
    pubsub.ssubscribe(*channels)
    drain(pubsub, 0.2, sharded=True)
    assert len(set(pubsub._shard_channel_to_node.values())) > 1  # one connection per shard
    for channel in channels:
        client.spublish(channel, channel[-8:])
    assert sorted(drain(pubsub, 1.0, sharded=True)) == sorted(
        ("smessage", c, c[-8:]) for c in channels)
    # get_message() knows nothing of shard subscriptions (Listener uses it today).
    with pytest.raises(RuntimeError, match="pubsub connection not set"):
        pubsub.get_message(timeout=0.05)


@pytest.mark.parametrize("cluster_setup", [1], indirect=True)
def test_a_lost_node_under_subscribers(cluster_setup: ClusterSetup) -> None:
    setup = cluster_setup
    client = connect(setup.url)
    assert isinstance(client, RedisCluster)
    channel = "jg:ch:node:n1"
    victim = setup.primary_for(channel)  # where ClusterPubSub subscribes it
    sharded = client.pubsub()
    shard_channel = next(f"jg:ch:{{r{i}}}:tree" for i in range(100)
                         if setup.primary_for(f"jg:ch:{{r{i}}}:tree") is victim)
    sharded.ssubscribe(shard_channel)
    drain(sharded, 0.1, sharded=True)
    events: list[tuple[float, str]] = []
    got: list[dict[str, Any]] = []
    listener = Listener(Store(client), [channel], lambda _c, m: got.append(m),
                        lambda: events.append((time.monotonic(), "up")),
                        lambda why: events.append((time.monotonic(), "down")))
    listener.start()
    try:
        wait_for(lambda: [e for _, e in events] == ["up"], timeout=5, what="the listener up")
        setup.kill(victim)
        # PING says nothing of a shard being down (redis-py answers True).
        assert client.ping() is True
        # The sharded subscriber hears of the loss: an error, not silence.
        with pytest.raises(redis.ConnectionError):
            drain(sharded, 2.0, sharded=True)
        setup.wait_for_failover(victim, timeout=15)
        # A ClusterPubSub made without a node subscribes on the node of the channel's
        # slot in the client's map, which only a failing keyed command refreshes: it
        # would keep reconnecting to the dead node. Store.pubsub picks a node at random
        # on each reconnection instead (classic messages reach every node), so the
        # listener is back without any command on that slot.
        wait_for(lambda: events[-1][1] == "up", timeout=10,
                 what="the listener back after the failover")
        wait_for(lambda: client.publish(channel, '{"t": "ready"}') >= 0 and got,
                 timeout=5, what="a message after the failover")
    finally:
        listener.stop()
