"""How Redis failures surface: everything that means "Redis cannot serve now" becomes
StoreUnavailableError, for the callers that ride out outages."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import (
    CrossSlotTransactionError,
    InvalidPipelineStack,
    RedisClusterException,
    SlotNotCoveredError,
)

from jobgrove.errors import (
    BadRedisURLError,
    CorruptRecordError,
    JobgroveError,
    StoreUnavailableError,
)

F = TypeVar("F", bound=Callable[..., Any])
#: Replies of a Redis that is there but cannot serve us now (out of memory, a replica
#: after a failover, cannot persist, busy script, loading): handled like an outage.
#: The codes also match these errors' text when a script's pcall caught them (an item
#: of a batch reports its own error as text, see lua/finish.lua).
_UNAVAILABLE_ERRORS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                       redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                       redis.exceptions.MasterDownError)
_UNAVAILABLE_CODES = ("OOM ", "BUSY", "LOADING", "MISCONF", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN",
                      "MOVED ", "ASK ", "MASTERDOWN", "READONLY")
#: Replies to the SELECT of a connection whose URL names a database the server lacks.
_BAD_DB = ("DB index is out of range", "invalid DB index")

#: What redis-py's cluster client raises for a mistake of ours (a command it cannot
#: route or pipeline): never an outage, so it is not retried for ever.
_CLUSTER_MISTAKES = (CrossSlotTransactionError, InvalidPipelineStack)
_MISTAKE_TEXTS = ("is blocked", "Too many targets", "Invalid args", "not implemented",
                  "shard_hint")


def cluster_unavailable(exc: BaseException) -> bool:
    """A cluster client error meaning "the cluster cannot serve now": slots not covered
    (a shard down, a failover under way), no seed reachable, no agreement on the slot
    map, no node for a command. These derive from ``Exception``, not ``RedisError``."""
    if isinstance(exc, SlotNotCoveredError):
        return True
    if not isinstance(exc, RedisClusterException) or isinstance(exc, _CLUSTER_MISTAKES):
        return False
    return not any(text in str(exc) for text in _MISTAKE_TEXTS)


def refuses_service(exc: Exception) -> bool:
    """An error reply meaning "Redis is there but cannot serve now" (OOM, read-only,
    BUSY script, LOADING, CLUSTERDOWN, TRYAGAIN...): handled like an outage, never as a
    verdict."""
    if isinstance(exc, _UNAVAILABLE_ERRORS) or cluster_unavailable(exc):
        return True
    # redis-py prefixes errors inside a pipeline: "Command # 1 (...) caused error: BUSY"
    message = str(exc).rsplit(" caused error: ", 1)[-1]
    return message.startswith(_UNAVAILABLE_CODES)


def translate_errors(fn: F) -> F:
    """Turn redis-py connection failures into StoreUnavailableError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobgroveError:
            raise  # ours already (WaitTimeoutError is an OSError too)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
        except RedisClusterException as exc:
            if cluster_unavailable(exc):
                raise StoreUnavailableError(f"Redis Cluster unavailable: {exc}") from exc
            raise
        except redis.ResponseError as exc:
            if refuses_service(exc):
                raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
            if "WRONGTYPE" in str(exc):
                raise CorruptRecordError(f"a record in Redis is not of its type (damaged "
                                         f"by hand, or by another program?): {exc}") from exc
            if str(exc).startswith(_BAD_DB):
                raise BadRedisURLError(f"Redis refused the database of the URL: {exc} (the "
                                    "server's 'databases' setting bounds it)") from exc
            raise

    return wrapper  # type: ignore[return-value]
