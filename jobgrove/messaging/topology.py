"""What kind of Redis a client talks to, and what differs between them: one server (or
fakeredis), a Sentinel-managed primary, or a Redis Cluster.

Everything above the store works the same on all three. The few places that cannot
(health, failover detection, pub/sub connections, one server's pipeline) ask here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import SentinelConnectionPool

T = TypeVar("T")


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def is_fake(client: Any) -> bool:
    """fakeredis (the embedded mode): no INFO, WAIT, slots or script shebangs."""
    return type(client).__module__.split(".")[0] == "fakeredis"


def script_pipeline(client: Any) -> Any:
    """A non-transactional pipeline for script calls. On a cluster it routes EVALSHA
    by its declared key (``connection.ScriptsByKey``): redis-py 8.1's
    ``RedisCluster.pipeline()`` leaves out the client's policy resolver, and without it
    asks a node (COMMAND GETKEYS) before each EVALSHA: a round trip per job outcome."""
    pipe = client.pipeline(transaction=False)
    resolver = getattr(client, "_policy_resolver", None)
    if is_cluster(client) and resolver is not None and hasattr(pipe, "_policy_resolver"):
        pipe._policy_resolver = resolver
    return pipe


def primaries(client: Any) -> list[ClusterNode]:
    """The primaries of the client's slot map, each once."""
    return list(client.get_primaries())


def server_of(client: Any, key: str) -> redis.Redis:
    """A plain client of the primary holding ``key``'s slot (its own pool): a pipeline
    on it is one connection, which is what WAIT needs."""
    server: redis.Redis = client.get_redis_connection(client.get_node_from_key(key))
    return server


def on_primaries(client: Any, fn: Callable[[redis.Redis], T]) -> list[tuple[str, T]]:
    """``fn(server)`` on every primary of a cluster, directly (without the cluster
    client's retries: a dead primary fails at once). A primary that does not answer
    makes the client read the slot map again first (a failover promoted another: the
    map is otherwise only refreshed by a keyed command that fails)."""
    for attempt in (1, 2):
        try:
            return [(node.name, fn(client.get_redis_connection(node)))
                    for node in primaries(client)]
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == 2:
                raise
            client.nodes_manager.initialize()
    raise AssertionError("unreachable")


def _cluster_ok(server: Any) -> bool:
    info: Any = server.execute_command("CLUSTER INFO")
    if isinstance(info, dict):  # redis-py parses it into a dict of strings
        return bool(info.get("cluster_state") == "ok")
    return "cluster_state:ok" in str(info)


def ping(client: Any) -> bool:
    """Whether Redis can serve every key now. On a cluster: every primary answers and
    says the slots are covered (a plain PING reaches one node, which answers while
    another shard is down)."""
    if not is_cluster(client):
        return bool(client.ping())
    answers = on_primaries(client, lambda server: server.ping() and _cluster_ok(server))
    return bool(answers) and all(ok for _, ok in answers)


def identity(client: Any) -> frozenset[str] | None:
    """Who serves our writes: the run id of every primary (a failover promotes another
    server; a restarted server has a new run id), and for Sentinel the primary's address
    as the sentinels report it. None where it cannot be known (fakeredis)."""
    if is_fake(client):
        return None
    if is_cluster(client):
        return frozenset(f"{name}={run_id}" for name, run_id in on_primaries(
            client, lambda server: server.info("server")["run_id"]))
    parts = {f"run_id={client.info('server').get('run_id')}"}
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        # Asking the sentinels also drops idle connections to a primary they no longer
        # report (a resumed old primary takes writes until it is demoted).
        host, port = pool.get_master_address()  # type: ignore[no-untyped-call]
        parts.add(f"primary={host}:{port}")
    return frozenset(parts)


def reset_connections(client: Any) -> None:
    """Drop idle pooled connections (Sentinel: the next ones ask the sentinels for the
    primary; a connection made before a failover may still reach the old primary).
    Connections in use (a pub/sub listener's) are left alone."""
    if not is_cluster(client) and not is_fake(client):
        client.connection_pool.disconnect(inuse_connections=False)


def pubsub(client: Any, **kwargs: Any) -> Any:
    """A new pub/sub connection. On a cluster, on a node picked at random: a classic
    message reaches every node, and a node that died under an earlier connection is
    then avoided without waiting for the slot map to be refreshed."""
    if is_cluster(client):
        return client.pubsub(node=random.choice(client.get_nodes()), **kwargs)
    return client.pubsub(**kwargs)


def server_time(client: Any, key: str) -> float:
    """The clock of the server holding ``key`` (on a cluster, the shard of the tree)."""
    target = server_of(client, key) if is_cluster(client) else client
    seconds, micros = target.time()
    return float(seconds) + float(micros) / 1e6
