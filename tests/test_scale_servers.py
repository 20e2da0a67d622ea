"""The real multi-server fixtures work, with the clients connect() makes from their URLs:
a Sentinel setup (writes reach the replica; the client follows a failover) and a Redis
Cluster (keys spread over the shards; it serves on after a primary with a replica dies)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from jobgrove.messaging.connection import connect
from tests.helpers import free_port, wait_for
from tests.servers import HOST, ClusterSetup, SentinelSetup

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


def answers(client: Any, key: str, value: str) -> bool:
    """Whether ``client`` reads ``value`` at ``key`` now (an outage is just 'not yet')."""
    try:
        return bool(client.get(key) == value)
    except (redis.RedisError, OSError):
        return False


def test_sentinel_client_writes_and_reads(shared_sentinel: SentinelSetup) -> None:
    setup = shared_sentinel
    client = connect(setup.url)
    assert client.set("greeting", "hello") and client.get("greeting") == "hello"
    assert client.connection_pool.get_master_address() == (HOST, setup.primary.port)
    assert setup.current_primary() is setup.primary
    wait_for(lambda: setup.replica.client().get("greeting") == "hello", timeout=5,
             what="the write to reach the replica")
    # A dead sentinel first in the URL costs no retries: the next one answers at once.
    url = setup.url.replace("//", f"//{HOST}:{free_port()},", 1)
    began = time.monotonic()
    assert connect(url).get("greeting") == "hello"
    assert time.monotonic() - began < 1.0


def test_sentinel_client_follows_a_failover(sentinel_setup: SentinelSetup) -> None:
    setup = sentinel_setup
    client = connect(setup.url)
    client.set("before", "kill")
    setup.wait_replicated()
    setup.primary.kill()
    promoted = setup.wait_for_failover(setup.primary, timeout=15)
    assert promoted is setup.replica
    # The same client object reaches the promoted replica: the data is there and it
    # takes writes.
    wait_for(lambda: answers(client, "before", "kill"), timeout=10,
             what="the client to reach the promoted replica")
    assert client.connection_pool.get_master_address() == (HOST, setup.replica.port)
    assert client.set("after", "failover") and setup.replica.client().get("after") == "failover"


def test_cluster_keys_land_on_every_shard(shared_cluster: ClusterSetup) -> None:
    setup = shared_cluster
    client = connect(setup.url)
    assert isinstance(client, RedisCluster)
    keys = [f"key-{i}" for i in range(30)]
    for key in keys:
        client.set(key, key.upper())
    assert len({client.keyslot(k) for k in keys}) == len(keys)
    owners = {setup.primary_for(k).port for k in keys}
    assert owners == {n.port for n in setup.primaries()} and len(owners) == 3
    for node in setup.primaries():
        assert node.client().dbsize() > 0, f"{node.name} holds no key"
    assert [client.get(k) for k in keys] == [k.upper() for k in keys]
    # Any one seed starts a client.
    lone = connect(f"redis+cluster://{setup.nodes[-1].address}")
    assert isinstance(lone, RedisCluster) and lone.get(keys[0]) == "KEY-0"


@pytest.mark.parametrize("cluster_setup", [1], indirect=True)
def test_cluster_serves_on_after_a_primary_dies(cluster_setup: ClusterSetup) -> None:
    setup = cluster_setup
    assert len(setup.primaries()) == 3 and len(setup.nodes) == 6
    client = connect(setup.url)
    keys = [f"key-{i}" for i in range(12)]
    for key in keys:
        client.set(key, key.upper())
    victim = setup.primary_for(keys[0])
    replica, = setup.replicas_of(victim)
    assert victim.client().wait(1, 5000) == 1, "the writes did not reach the replica"
    setup.kill(victim)
    assert setup.wait_for_failover(victim, timeout=15) is replica
    wait_for(lambda: answers(client, keys[0], "KEY-0"), timeout=10,
             what="the client to reach the promoted replica")
    assert [client.get(k) for k in keys] == [k.upper() for k in keys]
    assert client.set(keys[0], "after") and replica.client().get(keys[0]) == "after"
