"""Script calls sent together: one round trip per server, each call still its own
atomic script, and optionally acknowledged by replicas (``--min-replicas-ack``).

* One server or Sentinel: one pipeline (one connection).
* Redis Cluster: redis-py refuses ``pipe.evalsha`` on a cluster pipeline, so calls go
  as ``EVALSHA`` commands, which its pipeline routes by key (one request per node).
* With ``min_replicas_ack`` N: ``WAIT N timeout`` closes each server's pipeline, on the
  same connection as the writes it waits for (WAIT follows its own connection's
  writes; on a cluster, hence one plain pipeline per primary). Fewer than N replicas
  within the timeout: ``NotReplicatedError``, an outage for the callers (nothing is
  taken as done; replaying the calls is safe, see ``Store``).

A ``NOSCRIPT`` reply (a restarted server, a promoted replica: the script cache is not
replicated) loads the script and sends again only the calls that got it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import redis

from jobgrove.errors import StoreUnavailableError
from jobgrove.messaging.redis_errors import refuses_service
from jobgrove.messaging.scripts import TreeScript
from jobgrove.messaging.topology import is_cluster, script_pipeline

log = logging.getLogger(__name__)


class NotReplicatedError(StoreUnavailableError):
    """Fewer replicas than ``--min-replicas-ack`` acknowledged a state change in time:
    it is not taken as done (the caller rides it out like an outage)."""


@dataclasses.dataclass(frozen=True)
class Call:
    """One script call: the script, its KEYS and its ARGV (``TreeScript.call_args``)."""

    script: TreeScript
    keys: list[str]
    args: list[Any]


class Batches:
    """Sends ``Call``s; ``acks``: replicas that must acknowledge (0: none asked)."""

    def __init__(self, client: Any, acks: int = 0, ack_timeout: float = 1.0) -> None:
        self.client = client
        self.acks = acks
        self.ack_timeout_ms = max(1, int(ack_timeout * 1000))

    def run(self, calls: Sequence[Call]) -> list[Any]:
        """Each call's reply in order (an error reply as its exception).
        StoreUnavailableError if Redis cannot serve now, or NotReplicatedError."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in (1, 2):
            for i, reply in zip(todo, self._send([calls[i] for i in todo])):
                replies[i] = reply
            missing = [i for i in todo
                       if isinstance(replies[i], redis.exceptions.NoScriptError)]
            if not missing or attempt == 2:
                break
            for script in {calls[i].script.name: calls[i].script for i in missing}.values():
                self.client.script_load(script.text)
            todo = missing
        for reply in replies:
            if isinstance(reply, (redis.ConnectionError, redis.TimeoutError, OSError)) \
                    or (isinstance(reply, Exception) and refuses_service(reply)):
                raise StoreUnavailableError(f"Redis unavailable: {reply}") from reply
        return replies

    def _send(self, calls: list[Call]) -> list[Any]:
        if not self.acks:
            pipe = script_pipeline(self.client)
            _add(pipe, calls)
            return list(pipe.execute(raise_on_error=False))
        if not is_cluster(self.client):
            return self._acknowledged(self.client, calls)
        # Per primary: WAIT only covers the writes of its own connection.
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            groups.setdefault(self.client.get_node_from_key(call.keys[0]).name, []).append(i)
        replies: list[Any] = [None] * len(calls)
        for name, indexes in groups.items():
            server = self.client.get_redis_connection(self.client.get_node(node_name=name))
            for i, reply in zip(indexes, self._acknowledged(server, [calls[i] for i in indexes])):
                replies[i] = reply
        return replies

    def _acknowledged(self, server: Any, calls: list[Call]) -> list[Any]:
        pipe = server.pipeline(transaction=False)
        _add(pipe, calls)
        pipe.execute_command("WAIT", self.acks, self.ack_timeout_ms)
        *replies, acked = pipe.execute(raise_on_error=False)
        redirected = [r for r in replies if isinstance(r, redis.ResponseError)
                      and str(r).startswith(("MOVED ", "ASK "))]
        if redirected and is_cluster(self.client):
            # The slot moved (a failover, a resharding): read the map again and let the
            # caller retry (a redirected script did not run).
            self.client.nodes_manager.initialize()
            raise StoreUnavailableError(f"Redis Cluster slot moved: {redirected[0]}")
        if isinstance(acked, Exception):
            raise StoreUnavailableError(f"WAIT failed: {acked}") from acked
        if int(acked) < self.acks:
            raise NotReplicatedError(
                f"only {acked} of {self.acks} replica(s) acknowledged within "
                f"{self.ack_timeout_ms} ms (--min-replicas-ack)")
        return list(replies)


def _add(pipe: Any, calls: list[Call]) -> None:
    for call in calls:
        # EVALSHA by name: the method is refused in cluster pipelines, the command is
        # routed by its first key.
        pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys,
                             *call.args)
