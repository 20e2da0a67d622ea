"""Node upkeep that is not about running jobs: lease heartbeats (``Lease``), the node
record, reaping lost nodes, reconciliation reads, undo claims, outage notifications.

Plain code called from the node actor's thread (so it needs no locks of its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from jobgrove.actors.lease import Lease
from jobgrove.errors import StoreUnavailableError
from jobgrove.messaging.records import Holder
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

Notifier = Callable[[str, dict[str, Any]], None]

#: Seconds Redis must stay reachable before a recovery is announced.
RECOVERY_SETTLE = 1.0
#: Seconds a tree listed for this node may stay missing before the node forgets it
#: (a submit writes the node's tree set first, then the tree: a crash in between
#: leaves an entry of a tree that never comes; a slow submit only delays it).
MISSING_TREE_GRACE = 60.0


class Upkeep:
    def __init__(self, store: Store, registry: Registry, lease: Lease,
                 record: dict[str, Any], *, heartbeat: float,
                 reconcile_interval: float, undo_kinds: set[str],
                 notifier: Notifier | None = None) -> None:
        self.store = store
        self.registry = registry
        self.lease = lease
        self.name = lease.name
        self.record = record
        self.ttl = lease.ttl
        self.heartbeat = heartbeat
        self.reconcile_interval = reconcile_interval
        self.undo_kinds = undo_kinds
        self.notifier = notifier
        self._next_beat = 0.0
        self._next_reap = time.monotonic() + lease.ttl
        # Reap nobody until Redis has been reachable for a whole lease (plus margin):
        # after an outage, every node needs a chance to renew before anyone judges it.
        self._reap_after = time.monotonic() + lease.ttl * 1.5
        self._down_since: float | None = None
        self._up_since: float | None = None
        self._outage_notified = False
        self._missing: dict[str, float] = {}  # trees listed but absent: since when

    # -- timers -------------------------------------------------------------------------
    def tick(self, running_ids: list[str]) -> None:
        self._settle_recovery()
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat
            self._beat(running_ids)
        if now >= self._next_reap and now >= self._reap_after:
            self._next_reap = now + self.ttl / 2
            self.reap_lost_nodes()

    @property
    def holder(self) -> Holder:
        return self.lease.holder

    @property
    def fenced(self) -> bool:
        return self.lease.fenced

    def may_claim(self) -> bool:
        """Whether this process may claim now. A lease not renewed recently (the
        process was frozen, or Redis slow) is renewed first, right here."""
        lease = self.lease
        if lease.valid():
            return True
        if not lease.fenced:
            self._renew()
        return lease.valid()

    def _renew(self) -> str:
        state = self.lease.renew()
        if state == "retaken":
            log.warning("lease of node %r had expired; taken back", self.name)
            self._lease_lapsed()
        return state

    def _beat(self, running_ids: list[str]) -> None:
        if self.lease.fenced:
            return  # nothing of ours to renew; the node actor tries to register again
        if self._renew() != "lost":
            self.registry.write_record(self.name, {**self.record, **self._identity(),
                                                   "running": running_ids})

    def _identity(self) -> dict[str, Any]:
        holder = self.lease.holder
        return {"lease_token": holder.instance, "epoch": holder.epoch}

    def reregister(self) -> bool:
        """Fenced: register again as a new instance once no live process holds the name,
        then settle what the old instance left RUNNING. True once done."""
        if not self.lease.reacquire(self.record):
            return False
        self.reap_own()
        return True

    def _lease_lapsed(self) -> None:
        """Our own lease lapsed although we heartbeat: Redis stalled (a pause, a slow
        save) or this process did. Every lease may have lapsed alike: reap nobody until
        the others had the same grace as after an outage."""
        self._reap_after = max(self._reap_after, time.monotonic() + self.ttl * 1.5)

    def probe(self) -> bool:
        """True once Redis accepts writes again (renews the lease, as a heartbeat) and
        serves every key (on a cluster, the lease's shard may be up while another is
        down: StoreUnavailableError then, as for any outage)."""
        if self.lease.fenced:
            self.lease.name_free()  # a read: still proves Redis answers
        else:
            self._renew()
        if not self.store.ping():
            raise StoreUnavailableError("Redis cannot serve every key yet")
        return True

    def redis_changed(self, ok: bool, detail: str) -> None:
        """Track outages. The administrator hears of an outage at once, and of the
        recovery once Redis has stayed reachable for RECOVERY_SETTLE: a connection that
        flaps (pub/sub killed again and again) is one outage, not a storm of alerts."""
        now = time.monotonic()
        if ok:
            self._reap_after = now + self.ttl * 1.5
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
        """At (re)registration: end what earlier processes of this name left RUNNING,
        and fence them off in each tree (this instance's epoch is recorded there)."""
        holder = self.lease.holder
        summary = f"node {self.name} restarted while the job was running"
        ended: list[str] = []
        for root in self.store.node_trees(self.name):
            ended.extend(self.store.reap(root, self.name, summary, spare=holder.instance,
                                         epoch=holder.epoch))
        return ended

    def reap_foreign(self, root: str) -> list[str]:
        """Jobs of this node RUNNING in ``root`` for another instance of its name (a
        stale process's claim made after this one registered): end them. This process
        holds the name, so that other one is gone or fenced; never run them here."""
        holder = self.lease.holder
        return self.store.reap(root, self.name, f"claimed by a stale process of node "
                               f"{self.name}, which lost its name", spare=holder.instance,
                               epoch=holder.epoch)

    def reap_lost_nodes(self) -> None:
        if self.lease.fenced:
            return
        try:
            nodes = self.registry.nodes()
            # Judge others only while our own lease is intact (the read above may have
            # waited out a stall that let every lease lapse).
            held = self._renew()
        except StoreUnavailableError:
            return
        if held != "held":
            self._lease_lapsed()
            return
        for node in nodes:
            if node["alive"] or node["name"] == self.name or node.get("reaped"):
                continue
            # One reaper per lost node; the scripts would make a second pass a no-op anyway.
            if not self.registry.lock_reaper(node["name"], self.name, int(self.ttl * 3000)):
                continue
            ended = self._reap_lost(node["name"])
            record = self.registry.record(node["name"]) or {}
            if not self.registry.lease_held(node["name"]):
                self.registry.write_record(node["name"], {**record, "reaped": True,
                                                          "running": []})
            if ended:
                log.warning("node %s lost: ended its running jobs %s (the first FAILED, the "
                            "rest ABORTED)", node["name"], ended)

    def _reap_lost(self, node: str) -> list[str]:
        # The epoch first: a process of the node registering after this read has a newer
        # one, and the reap script leaves alone any tree it has used.
        upto = self.registry.epoch(node)
        ended: list[str] = []
        for root in self.store.node_trees(node):
            # A lost node that comes back (restarted under its name) holds its lease
            # again: from then on what runs under its name is its business.
            if self.registry.lease_held(node):
                break
            ended.extend(self.store.reap(root, node, f"node {node} lost (lease expired)",
                                         upto=upto))
        return ended

    # -- reconciliation reads --------------------------------------------------------------
    def tree_flags(self, node: str) -> dict[str, tuple[bool, bool]]:
        """For each tree with jobs on ``node``: (finished, aborting). A listed tree that
        does not exist is left out, and forgotten once missing for MISSING_TREE_GRACE
        (the submit that listed it re-lists it after writing the tree)."""
        found = self.store.tree_flags(node)
        now = time.monotonic()
        self._missing = {root: self._missing.get(root, now)
                         for root, flags in found.items() if flags is None}
        for root, since in list(self._missing.items()):
            if now - since >= MISSING_TREE_GRACE:
                log.warning("tree %s is listed for node %s but does not exist (a submit "
                            "that did not complete): forgotten", root, node)
                self.store.forget_node_tree(node, root)
                del self._missing[root]
        return {root: flags for root, flags in found.items() if flags is not None}

    def claim_undo(self, root: str, limit: int) -> list[str]:
        """Up to ``limit`` undo hooks owed here for an aborted tree, each claimed once."""
        return self.store.claim_undo(root, self.name, self.undo_kinds, limit)
