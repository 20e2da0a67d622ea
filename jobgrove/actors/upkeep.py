"""Node upkeep that is not about running jobs: lease heartbeats, the node record,
reaping lost nodes, reconciliation reads, undo claims, outage notifications.

Plain code called from the node actor's thread (so it needs no locks of its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from jobgrove.errors import StoreUnavailableError
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict[str, Any]], None]

#: Seconds Redis must stay reachable before a recovery is announced.
RECOVERY_SETTLE = 1.0


class Upkeep:
    def __init__(self, store: Store, registry: Registry, name: str, token: str,
                 record: dict[str, Any], *, lease: float, heartbeat: float,
                 reconcile_interval: float, undo_kinds: set[str],
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.registry = registry
        self.name = name
        self.token = token
        self.record = record
        self.lease = lease
        self.heartbeat = heartbeat
        self.reconcile_interval = reconcile_interval
        self.undo_kinds = undo_kinds
        self.notifier = notifier
        self._next_beat = 0.0
        self._next_reap = time.monotonic() + lease
        # Reap nobody until Redis has been reachable for a whole lease (plus margin):
        # after an outage, every node needs a chance to renew before anyone judges it.
        self._reap_after = time.monotonic() + lease * 1.5
        self._down_since: float | None = None
        self._up_since: float | None = None
        self._outage_notified = False

    # -- timers -------------------------------------------------------------------------
    def tick(self, running_ids: list[str]) -> None:
        self._settle_recovery()
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat
            self._beat(running_ids)
        if now >= self._next_reap and now >= self._reap_after:
            self._next_reap = now + self.lease / 2
            self.reap_lost_nodes()

    def _beat(self, running_ids: list[str]) -> None:
        state = self.registry.renew(self.name, self.token, int(self.lease * 1000))
        if state == "lost":
            log.error("node name %r is held by another process now; this node keeps its "
                      "running jobs but its lease is gone", self.name)
        elif state == "retaken":
            log.warning("lease of node %r had expired; taken back", self.name)
            self._lease_lapsed()
        self.registry.write_record(self.name, {**self.record, "running": running_ids})

    def _lease_lapsed(self) -> None:
        """Our own lease lapsed although we heartbeat: Redis stalled (a pause, a slow
        save) or this process did. Every lease may have lapsed alike: reap nobody until
        the others had the same grace as after an outage."""
        self._reap_after = max(self._reap_after, time.monotonic() + self.lease * 1.5)

    def probe(self) -> bool:
        """True once Redis accepts writes again (renews the lease, as a heartbeat)."""
        self.registry.renew(self.name, self.token, int(self.lease * 1000))
        return True

    def redis_changed(self, ok: bool, detail: str) -> None:
        """Track outages. The administrator hears of an outage at once, and of the
        recovery once Redis has stayed reachable for RECOVERY_SETTLE: a connection that
        flaps (pub/sub killed again and again) is one outage, not a storm of alerts."""
        now = time.monotonic()
        if ok:
            self._reap_after = now + self.lease * 1.5
            self._next_beat = 0.0
            self._up_since = now
            return
        self._up_since = None
        if self._down_since is None:
            self._down_since = now
        if not self._outage_notified:
            self._outage_notified = True
            self._notify("redis_down", {"detail": detail})

    def _settle_recovery(self) -> None:
        if self._up_since is None or not self._outage_notified:
            return
        now = time.monotonic()
        if now - self._up_since >= RECOVERY_SETTLE:
            down_for = None if self._down_since is None else self._up_since - self._down_since
            self._outage_notified = False
            self._down_since = self._up_since = None
            self._notify("redis_up", {"detail": "Redis reachable again",
                                      "down_seconds": down_for})

    def _notify(self, event: str, details: dict[str, Any]) -> None:
        if self.notifier is None:
            return
        try:
            self.notifier(event, {"node": self.name, **details})
        except Exception:
            log.exception("notifier failed for %s", event)

    # -- node failure ----------------------------------------------------------------------
    def reap_own(self) -> list[str]:
        """At start: fail this node's jobs left RUNNING by a previous process."""
        return self._reap(self.name, f"node {self.name} restarted while the job was running")

    def reap_lost_nodes(self) -> None:
        try:
            nodes = self.registry.nodes()
            # Judge others only while our own lease is intact (the read above may have
            # waited out a stall that let every lease lapse).
            held = self.registry.renew(self.name, self.token, int(self.lease * 1000))
        except StoreUnavailableError:
            return
        if held != "held":
            self._lease_lapsed()
            return
        for node in nodes:
            if node["alive"] or node["name"] == self.name or node.get("reaped"):
                continue
            # One reaper per lost node; the scripts would make a second pass a no-op anyway.
            if not self.registry.lock_reaper(node["name"], self.name, int(self.lease * 3000)):
                continue
            ended = self._reap(node["name"], f"node {node['name']} lost (lease expired)",
                               lost=True)
            record = self.registry.record(node["name"]) or {}
            if not self.registry.lease_held(node["name"]):
                self.registry.write_record(node["name"], {**record, "reaped": True,
                                                          "running": []})
            if ended:
                log.warning("node %s lost: ended its running jobs %s (the first FAILED, the "
                            "rest ABORTED)", node["name"], ended)

    def _reap(self, node: str, summary: str, lost: bool = False) -> list[str]:
        ended: list[str] = []
        for root in self.store.node_trees(node):
            # A lost node that comes back (restarted under its name) holds its lease
            # again: from then on its RUNNING jobs are its own, not the reaper's.
            if lost and self.registry.lease_held(node):
                break
            ended.extend(self.store.reap(root, node, summary))
        return ended

    # -- reconciliation reads --------------------------------------------------------------
    def tree_flags(self, node: str) -> dict[str, tuple[bool, bool]]:
        """For each tree with jobs on ``node``: (finished, aborting)."""
        return self.store.tree_flags(node)

    def claim_undo(self, root: str, limit: int) -> list[str]:
        """Up to ``limit`` undo hooks owed here for an aborted tree, each claimed once."""
        return self.store.claim_undo(root, self.name, self.undo_kinds, limit)
