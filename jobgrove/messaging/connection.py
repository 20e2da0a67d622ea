"""Redis connections: real servers by URL, or an in-process fakeredis server.

Both adapters give a redis-py client with ``decode_responses=True``; everything
above this module talks to that one API.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from jobgrove.errors import JobgroveError

DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: Socket timeouts: a paused or unreachable Redis must never hang a caller forever.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0


def redis_url(explicit: str | None = None) -> str:
    """--redis URL, else $JOBGROVE_REDIS_URL, else the default local server."""
    return explicit or os.environ.get("JOBGROVE_REDIS_URL") or DEFAULT_URL


def connect(url: str | None = None, *, socket_timeout: float = SOCKET_TIMEOUT) -> redis.Redis:
    """A client for ``url`` (no connection is made until first use)."""
    return redis.Redis.from_url(
        redis_url(url),
        decode_responses=True,
        # Bytes that are not UTF-8 (a stray publisher) become U+FFFD instead of an
        # exception in the middle of a reply.
        encoding_errors="replace",
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=10,
    )


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
    """``client`` itself if it decodes responses, else a twin on the same server that does."""
    kwargs = dict(client.connection_pool.connection_kwargs)
    if kwargs.get("decode_responses"):
        return client
    if "server" in kwargs:  # fakeredis
        return fake_client(kwargs["server"])
    kwargs["decode_responses"] = True
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class,
                                **kwargs)
    return redis.Redis(connection_pool=pool)

