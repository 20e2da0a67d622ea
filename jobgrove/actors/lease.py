"""This process's hold on its node name: the lease, its epoch and how long it is known
to be good.

A node process registers as a new *instance* (a random id) with a new *epoch* (one
more than any process of the name had). Its claims and outcomes carry both, and Redis
refuses them once a newer process of the name has shown up in the tree concerned
(see ``messaging/lua``). Locally, the process claims nothing unless its lease is
known to be valid: renewed less than ``SAFE`` leases ago by this process's monotonic
clock, measured from when the renewal was *sent*. A process frozen past its lease
(SIGSTOP, a long pause, a VM migration) therefore stops claiming the moment it
wakes, before it even learns whether another process took its name.

Plain code used from the node actor's thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from jobgrove.errors import NodeNameInUseError
from jobgrove.messaging.records import Holder
from jobgrove.messaging.registry import Registry

log = logging.getLogger(__name__)

#: The share of the lease a renewal is trusted for. The rest is margin for the
#: renewal's own round trip and for clocks that run at slightly different rates.
SAFE = 0.75


class Lease:
    """The lease on ``name``: ``acquire`` once, ``renew`` on every heartbeat."""

    def __init__(self, registry: Registry, name: str, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.name = name
        self.ttl = ttl
        self.clock = clock
        self.holder = Holder(name, "", 0)
        #: Another process holds the name: this one must neither claim nor report.
        self.fenced = False
        self._valid_until = 0.0

    @property
    def token(self) -> str:
        """The instance id, also the lease key's value."""
        return self.holder.instance

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def acquire(self, record: dict[str, Any],
                holder_is_dead: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Register as a new instance of the name (NodeNameInUseError if a live process
        holds it). ``record`` is published as the node's record."""
        instance = uuid.uuid4().hex
        sent = self.clock()
        epoch = self.registry.claim_name(self.name, instance, self.ttl_ms,
                                         {**record, "lease_token": instance},
                                         holder_is_dead=holder_is_dead)
        self.holder = Holder(self.name, instance, epoch)
        self.fenced = False
        self._valid_until = sent + self.ttl * SAFE

    def valid(self) -> bool:
        """True while this process may claim: not fenced, and renewed recently."""
        return not self.fenced and self.clock() < self._valid_until

    def renew(self) -> str:
        """Extend the lease: 'held', 'retaken' (it had lapsed and nobody else took the
        name: ours again), or 'lost' (another process holds it: fenced from now on)."""
        sent = self.clock()
        state = self.registry.renew(self.name, self.token, self.ttl_ms)
        if state == "lost":
            if not self.fenced:
                log.error("node name %r is held by another process now: this process "
                          "(instance %s, epoch %d) stops claiming and ends what it runs",
                          self.name, self.token[:8], self.holder.epoch)
            self.fenced = True
        else:
            self._valid_until = sent + self.ttl * SAFE
        return state

    def fence(self) -> None:
        """Redis refused a claim or outcome of this process: a newer one has the name."""
        if not self.fenced:
            log.error("node name %r: Redis refused this process's work (a newer process "
                      "of the name exists); it stops claiming and ends what it runs",
                      self.name)
        self.fenced = True

    def name_free(self) -> bool:
        return not self.registry.lease_held(self.name)

    def reacquire(self, record: dict[str, Any]) -> bool:
        """Fenced, and no live process holds the name any more: register again as a new
        instance. False if the name is still (or again) held."""
        if not self.name_free():
            return False
        try:
            self.acquire(record)
        except NodeNameInUseError:
            return False
        log.warning("node name %r was free again: registered as a new instance (epoch %d)",
                    self.name, self.holder.epoch)
        return True

    def release(self) -> None:
        self.registry.release(self.name, self.token)
