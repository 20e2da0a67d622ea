"""Redis connections: real servers by URL, or an in-process fakeredis server.

Every client jobgrove makes comes from here, with ``decode_responses=True``; everything
above this module talks to that one API. A URL (``urls.py`` parses it) names one server
(``redis://``, ``rediss://``, ``unix://``), a Sentinel-managed primary
(``redis+sentinel://``: the primary is found through the sentinels and followed across
failovers) or a Redis Cluster (``redis+cluster://``: redis-py's cluster client, started
from any of the seeds).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from redis._parsers.commands import CommandPolicies, RequestPolicy, ResponsePolicy
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.policies import BasePolicyResolver, PolicyResolver, StaticPolicyResolver
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from jobgrove.errors import JobgroveError, StoreUnavailableError
from jobgrove.messaging.urls import RedisTarget, parse_redis_url, redact_url

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_URL", "SOCKET_TIMEOUT", "RedisTarget", "connect",
           "decoded", "fake_client", "fake_server", "parse_redis_url", "redact_url",
           "redis_url"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Socket timeouts: a paused or unreachable Redis must never hang a caller forever.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
#: Seconds a pooled connection may idle before it is PINGed on its next use.
HEALTH_CHECK_INTERVAL = 10
#: Retries of the cluster client on a connection error or CLUSTERDOWN (redirections
#: are followed anyway): few and short, so that a shard that is down reads as an outage
#: within a second instead of stalling each command for seconds (redis-py's default is
#: 10 retries backing off to 1 s). The callers ride outages out and retry themselves.
CLUSTER_RETRIES = 3


def redis_url(explicit: str | None = None) -> str:
    """--redis URL, else $JOBGROVE_REDIS_URL, else the default local server."""
    return explicit or os.environ.get("JOBGROVE_REDIS_URL") or DEFAULT_URL


def _common(target: RedisTarget, socket_timeout: float) -> dict[str, Any]:
    """Keyword arguments of every data connection, whatever the kind of target."""
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        # Bytes that are not UTF-8 (a stray publisher) become U+FFFD instead of an
        # exception in the middle of a reply.
        "encoding_errors": "replace",
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
    }
    if target.username is not None:
        kwargs["username"] = target.username
    if target.password is not None:
        kwargs["password"] = target.password
    return kwargs


def _single(target: RedisTarget, socket_timeout: float) -> redis.Redis:
    # The pool redis-py's from_url would build (so no command retries: a failing call
    # surfaces at once and the callers ride it out as an outage).
    kwargs = _common(target, socket_timeout)
    kwargs.update(db=target.db, health_check_interval=HEALTH_CHECK_INTERVAL)
    if target.unix_socket is not None:
        kwargs.update(connection_class=redis.UnixDomainSocketConnection,
                      path=target.unix_socket)
    else:
        (host, port), = target.hosts
        kwargs.update(host=host, port=port)
        if target.tls:
            kwargs["connection_class"] = redis.SSLConnection
            for option in ("ssl_ca_certs", "ssl_cert_reqs"):
                if getattr(target, option) is not None:
                    kwargs[option] = getattr(target, option)
    return redis.Redis.from_pool(redis.ConnectionPool(**kwargs))


def _sentinel(target: RedisTarget, socket_timeout: float) -> redis.Redis:
    assert target.service is not None
    # (redis-py leaves Sentinel, master_for, ClusterNode and SentinelConnectionPool
    # unannotated: hence the ignores.)
    # No retries on a sentinel: discovery already asks the next one, and redis-py's
    # default retries would stall every new connection for seconds on a dead sentinel.
    sentinels = Sentinel(list(target.hosts), sentinel_kwargs={  # type: ignore[no-untyped-call]
        "socket_timeout": socket_timeout, "socket_connect_timeout": CONNECT_TIMEOUT,
        "retry": Retry(NoBackoff(), 0)})
    # Each new connection asks the sentinels for the current primary; a primary
    # demoted to replica (READONLY) drops the connection so the next one follows.
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        target.service, db=target.db, health_check_interval=HEALTH_CHECK_INTERVAL,
        **_common(target, socket_timeout))
    return client


class ScriptsByKey(BasePolicyResolver):
    """Routes EVALSHA and EVAL by their declared keys. Without it redis-py's cluster
    pipeline asks a node (COMMAND GETKEYS) before every script call: a round trip per
    job outcome (see ``topology.script_pipeline``)."""

    def __init__(self, fallback: PolicyResolver | None = None) -> None:
        keyed = CommandPolicies(request_policy=RequestPolicy.DEFAULT_KEYED,
                                response_policy=ResponsePolicy.DEFAULT_KEYED)
        super().__init__({"core": {"evalsha": keyed, "eval": keyed}},
                         fallback or StaticPolicyResolver())

    def with_fallback(self, fallback: PolicyResolver) -> PolicyResolver:
        return ScriptsByKey(fallback)


def _cluster(target: RedisTarget, socket_timeout: float) -> RedisCluster:
    seeds = [ClusterNode(host, port)  # type: ignore[no-untyped-call]
             for host, port in target.hosts]
    try:
        # Unlike the other clients, this one connects now: it reads the slot map from
        # the first seed that answers.
        return RedisCluster(startup_nodes=seeds, retry=Retry(
            ExponentialWithJitterBackoff(base=0.02, cap=0.2), CLUSTER_RETRIES),
            policy_resolver=ScriptsByKey(), **_common(target, socket_timeout))
    except (RedisClusterException, redis.RedisError, OSError) as exc:
        raise StoreUnavailableError(
            f"Redis Cluster unavailable at {target.display()}: {exc}") from exc


def connect(url: str | None = None, *,
            socket_timeout: float = SOCKET_TIMEOUT) -> redis.Redis | RedisCluster:
    """A client for ``url`` (``redis_url``'s default when None).

    No connection is made until first use, except for ``redis+cluster://``, which
    reads the cluster's slot map now (``StoreUnavailableError`` if no seed answers).
    A malformed URL raises ``BadRedisURLError``.
    """
    target = parse_redis_url(redis_url(url))
    if target.kind == "sentinel":
        return _sentinel(target, socket_timeout)
    if target.kind == "cluster":
        return _cluster(target, socket_timeout)
    return _single(target, socket_timeout)


def _fakeredis() -> Any:
    # fakeredis is an optional dependency (the `demo` extra): production nodes never
    # need it, and a missing one must read as a one-line hint, not an ImportError trace.
    try:
        import fakeredis
    except ImportError as exc:
        raise JobgroveError(
            "the embedded mode needs fakeredis: pip install 'jobgrove[demo]'") from exc
    return fakeredis


def fake_server() -> Any:
    """A new in-process Redis (fakeredis) for the embedded mode."""
    return _fakeredis().FakeServer()


def fake_client(server: Any) -> Any:
    """A client of ``server`` (a fakeredis FakeRedis, the redis-py API)."""
    return _fakeredis().FakeRedis(server=server, decode_responses=True)


def decoded(client: Any) -> Any:
    """``client`` itself if it decodes responses, else a twin on the same server (or
    Sentinel service, or cluster) that does."""
    if isinstance(client, RedisCluster):
        cluster: Any = client
        if cluster.get_encoder().decode_responses:
            return client
        kwargs = dict(cluster.nodes_manager.connection_kwargs)
        kwargs.pop("redis_connect_func", None)  # the old client's own hook
        kwargs["decode_responses"] = True
        seeds = [ClusterNode(n.host, n.port)  # type: ignore[no-untyped-call]
                 for n in cluster.get_nodes()]
        return RedisCluster(startup_nodes=seeds, **kwargs)
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    if kwargs.get("decode_responses"):
        return client
    if "server" in kwargs:  # fakeredis
        return fake_client(kwargs["server"])
    kwargs["decode_responses"] = True
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)  # the old pool's proxy
        pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            pool.service_name, pool.sentinel_manager, is_master=pool.is_master,
            check_connection=pool.check_connection, connection_class=pool.connection_class,
            **kwargs)
        return redis.Redis(connection_pool=pool)
    pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)
