"""Node registry and liveness: a record per node and a lease (a key with a TTL).

A node holds its name by holding ``lease:<name>`` (value: a random token, set with
NX). Heartbeats extend it only while the token still matches, so two live processes
can never both believe they own one name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from jobgrove.errors import CorruptRecordError, NodeNameInUseError
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.redis_errors import translate_errors

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Registry:
    def __init__(self, client: Any, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._take_over = client.register_script(_TAKE_OVER)

    @translate_errors
    def claim_name(self, name: str, token: str, lease_ms: int, record: dict[str, Any],
                   holder_is_dead: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Take the lease on ``name`` for the process instance ``token`` and publish this
        node's record, or refuse (NodeNameInUseError). Returns the new lease epoch: it
        grows with every registration of the name, and fences older instances off.

        ``holder_is_dead(record)`` may vouch that the current holder is gone (a crashed
        process on this very host): then the lease is taken over at once instead of
        waiting for it to expire.
        """
        lease_key = self.keys.lease(name)
        if not self.client.set(lease_key, token, nx=True, px=lease_ms):
            holder = self.record(name) or {}
            old = holder.get("lease_token")
            # Compare-and-set on the dead holder's token: of two processes starting at
            # once, only one takes the name over.
            if holder_is_dead is not None and isinstance(old, str) and holder_is_dead(holder) \
                    and self._take_over(keys=[lease_key], args=[old, token, lease_ms]):
                return self._registered(name, record)
            raise NodeNameInUseError(
                f"node name {name!r} is already held by a live process "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                f"address {holder.get('address') or 'none'}); stop it or pick another --name")
        return self._registered(name, record)

    def _registered(self, name: str, record: dict[str, Any]) -> int:
        # After the lease: whoever holds the name got the highest epoch (a crash between
        # the two steps only skips a number).
        epoch = int(self.client.incr(self.keys.epoch(name)))
        self.write_record(name, {**record, "epoch": epoch})
        return epoch

    @translate_errors
    def renew(self, name: str, token: str, lease_ms: int) -> str:
        """'held' (extended), 'retaken' (it had expired and we took it back), 'lost'."""
        code = self._renew(keys=[self.keys.lease(name)], args=[token, lease_ms])
        return {1: "held", 2: "retaken"}.get(int(code), "lost")

    @translate_errors
    def release(self, name: str, token: str) -> None:
        self._release(keys=[self.keys.lease(name)], args=[token])

    @translate_errors
    def lease_held(self, name: str) -> bool:
        """Whether a live process holds ``name`` now."""
        return bool(self.client.exists(self.keys.lease(name)))

    @translate_errors
    def epoch(self, name: str) -> int:
        """The newest lease epoch of ``name`` (0: it never registered)."""
        return int(self.client.get(self.keys.epoch(name)) or 0)

    @translate_errors
    def lock_reaper(self, lost: str, reaper: str, ttl_ms: int) -> bool:
        """Become the one node reaping ``lost`` for ``ttl_ms`` (False: another is)."""
        return bool(self.client.set(self.keys.reaper_lock(lost), reaper, nx=True, px=ttl_ms))

    @translate_errors
    def mark_stopped(self, name: str, token: str) -> None:
        """Note in the record of ``name`` that its process (``token``) stopped cleanly
        (``node_state``); the next process of the name writes a fresh record."""
        record = self.record(name)
        if record is not None and record.get("lease_token") == token:
            self.write_record(name, {**record, "stopped": True, "running": []})

    @translate_errors
    def forget(self, name: str) -> bool:
        """Remove the record of ``name`` and what Redis keeps for it alone (its tree
        set, its list of log files to remove). Its epoch counter stays, so a later
        process of the name is never taken for an older one. False if it had no record."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hdel(k.nodes, name)
        pipe.unlink(k.node_trees(name), k.logs_gone(name), k.reaper_lock(name))
        return bool(pipe.execute()[0])

    @translate_errors
    def write_record(self, name: str, record: dict[str, Any]) -> None:
        self.client.hset(self.keys.nodes, name, json.dumps({**record, "seen": time.time()}))

    @translate_errors
    def record(self, name: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.keys.nodes, name)
        return None if raw is None else _decode(name, raw)

    @translate_errors
    def known(self, names: list[str]) -> set[str]:
        if not names:
            return set()
        present = self.client.hmget(self.keys.nodes, names)
        return {n for n, raw in zip(names, present) if raw is not None}

    @translate_errors
    def nodes(self) -> list[dict[str, Any]]:
        """Every node that ever registered (and was not forgotten), with ``alive`` (its
        lease is held) and ``state`` (``node_state``); never its lease token."""
        raw = self.client.hgetall(self.keys.nodes)
        names = sorted(raw)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.lease(name))
        alive = pipe.execute() if names else []
        out = []
        for name, is_alive in zip(names, alive):
            try:
                record = _decode(name, raw[name])
            except CorruptRecordError as exc:
                record = {"error": str(exc)}
            entry = {"name": name, "address": record.get("address"),
                     "running": record.get("running", []) if is_alive else [],
                     **{k: v for k, v in record.items() if k not in _NOT_SHOWN},
                     "alive": bool(is_alive)}
            entry["state"] = node_state(entry)
            out.append(entry)
        return out


#: Record fields never handed out: the lease token lets a process take the name over,
#: the epoch is fencing bookkeeping; ``running`` is replaced (see ``nodes``).
_NOT_SHOWN = ("running", "lease_token", "epoch")


def node_state(node: dict[str, Any]) -> str:
    """``up`` (its lease is held), ``stopped`` (it released its name cleanly) or ``lost``
    (its lease expired without a clean stop), for an entry of ``Registry.nodes()``."""
    if node.get("alive"):
        return "up"
    # A cleanly stopped node is reaped later too (harmlessly): "stopped" stays.
    return "stopped" if node.get("stopped") else "lost"


def _decode(name: str, raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise CorruptRecordError(f"node record {name!r} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CorruptRecordError(f"node record {name!r} is not an object")
    return value
