"""How Redis failures surface: everything that means "Redis cannot serve now" becomes
StoreUnavailableError, for the callers that ride out outages."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from jobgrove.errors import BadRedisURLError, JobgroveError, StoreUnavailableError

F = TypeVar("F", bound=Callable[..., Any])
#: Replies of a Redis that is there but cannot serve us now (out of memory, a replica
#: after a failover, cannot persist, busy script, loading): handled like an outage.
_UNAVAILABLE_ERRORS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                       redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                       redis.exceptions.MasterDownError)
_UNAVAILABLE_CODES = ("BUSY", "LOADING", "MISCONF", "NOREPLICAS")
#: Replies to the SELECT of a connection whose URL names a database the server lacks.
_BAD_DB = ("DB index is out of range", "invalid DB index")

def refuses_service(exc: Exception) -> bool:
    """An error reply meaning "Redis is there but cannot serve now" (OOM, read-only,
    BUSY script, LOADING...): handled like an outage, never as a verdict."""
    if isinstance(exc, _UNAVAILABLE_ERRORS):
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
        except redis.ResponseError as exc:
            if refuses_service(exc):
                raise StoreUnavailableError(f"Redis unavailable: {exc}") from exc
            if str(exc).startswith(_BAD_DB):
                raise BadRedisURLError(f"Redis refused the database of the URL: {exc} (the "
                                    "server's 'databases' setting bounds it)") from exc
            raise

    return wrapper  # type: ignore[return-value]
