"""The node actor: this node's slots, claims, outcomes and view of Redis.

It turns pub/sub hints and timer ticks into claims (WAITING -> RUNNING, up to the
concurrency limit), starts tree supervisors, and records outcomes through the
store's compare-and-set scripts. When Redis is unreachable it keeps outcomes in an
outbox, starts nothing, and replays the outbox once Redis answers again; after a
failover it records again what the new primary may lack (``outcomes.py``).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, TypeVar

import pykka

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.health import RedisHealth
from jobgrove.actors.job_actor import JobActor
from jobgrove.actors.ledger import Alarms, RunnerPool, Slots, Supervisors, undo_key
from jobgrove.actors.messages import (
    AbortCheck,
    Fence,
    Fill,
    Hint,
    HintKind,
    JobDone,
    JobsEnded,
    ListenerDown,
    Reconnected,
    RunUndo,
    StartJobs,
    Tick,
    UndoDone,
)
from jobgrove.actors.outcomes import FailoverWatch, Outcomes
from jobgrove.actors.stats import NodeStats
from jobgrove.actors.supervisor import TreeSupervisor
from jobgrove.actors.upkeep import Upkeep
from jobgrove.errors import StoreUnavailableError
from jobgrove.jobs.log import GrowthListener
from jobgrove.messaging.records import Claim
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
Ref = pykka.ActorRef[Any]
Outcome = JobDone | Fence

#: Seconds an idle tree supervisor is kept before it is stopped.
SUPERVISOR_IDLE = 2.0


def _stop(ref: Ref) -> None:
    ref.stop(block=False)


class NodeActor(Actor):
    def __init__(self, store: Store, name: str, *, concurrency: int, log_dir: str,
                 abort_grace: float, upkeep: Upkeep,
                 on_log_growth: GrowthListener | None = None, log_keep: int = 0,
                 stats: NodeStats | None = None) -> None:
        super().__init__()
        self.store = store
        self.name = name
        self.log_dir = log_dir
        self.abort_grace = abort_grace
        self.upkeep = upkeep
        self.on_log_growth = on_log_growth
        self.log_keep = log_keep  # bytes of each job's log end stored with its outcome
        self.stats = stats or NodeStats(concurrency)
        self.slots: Slots[Ref] = Slots(concurrency)
        self.pool: RunnerPool[Ref] = RunnerPool(concurrency, JobActor.start, _stop)
        self.outcomes = Outcomes(store, name)
        self.failover = FailoverWatch(store)
        self.health = RedisHealth(self._redis_changed, self.upkeep.lease.fence)
        self.fenced = False  # acted on the lease being lost (jobs aborted, waiting)
        self.supervisors: Supervisors[Ref] = Supervisors(self._start_supervisor, _stop,
                                                         SUPERVISOR_IDLE)
        self.dirty: dict[str, None] = {}  # roots that may have runnable jobs, in order
        self.undo_pending: set[str] = set()  # trees that may owe more undo hooks here
        self.retries = Alarms()  # trees to look at again when a retry delay ends
        self.fill_pending = False
        self.draining = False
        self.next_reconcile = 0.0
        self.retry_at = 0.0

    # -- what Node asks (through a proxy, always with a timeout) -------------------------
    @property
    def running_count(self) -> int:
        return self.slots.used

    @property
    def pending_outcomes(self) -> int:
        return len(self.outcomes)

    def all_runners(self) -> list[Ref]:
        """Every job actor, idle or busy (``Node.stop`` waits for them)."""
        return [*self.pool.idle(), *self.slots.runners()]

    def drain(self) -> None:
        """Stop claiming: running jobs finish and are recorded, nothing new starts."""
        self.draining = True

    def on_stop(self) -> None:
        self.supervisors.stop_all()
        for ref in self.slots.runners():
            ref.stop(block=False)
        self.pool.stop_all()

    # -- messages ------------------------------------------------------------------------
    @handles(JobDone, Fence)
    def _on_outcome(self, message: Outcome) -> None:
        slot = self.slots.release(message.job_id)
        if slot is None:
            # The other of a success and a fence that crossed: the first one counts
            # (the store would refuse the second anyway).
            log.info("late report of job %s ignored", message.job_id)
            return
        self.pool.give_back(slot.runner, retire=isinstance(message, Fence))
        self._released(message.root)
        self.outcomes.add(message)
        self._schedule_fill()

    @handles(UndoDone)
    def _on_undo_done(self, message: UndoDone) -> None:
        slot = self.slots.release(undo_key(message.job_id))
        if slot is not None:
            self.pool.give_back(slot.runner)
            self._released(message.root)

    @handles(Fill)
    def _on_fill(self, _message: Fill) -> None:
        self.fill_pending = False
        self._flush()
        self._fill()

    @handles(Hint)
    def _on_hint(self, hint: Hint) -> None:
        if hint.kind is HintKind.READY:
            self.dirty[hint.root] = None
            self._schedule_fill()
        elif hint.kind is HintKind.ABORT:
            # Only a hint: act if Redis says the tree is aborting (a stale or bogus
            # message must not abort a healthy tree).
            if not self.health.call("abort check", lambda: self.store.aborting(hint.root)):
                return
            self.dirty.pop(hint.root, None)
            ref = self.supervisors.get(hint.root)
            if ref is not None:
                ref.tell(AbortCheck())
            self._undo(hint.root)
        elif hint.kind is HintKind.DONE:
            if not self.health.call("done check", lambda: self.store.tree_finished(hint.root)):
                return
            self._undo(hint.root)  # the abort hint may have been lost
            if not self.slots.busy(hint.root):
                self._forget(hint.root)

    @handles(Tick)
    def _on_tick(self, _message: Tick) -> None:
        now = time.monotonic()
        self.supervisors.stop_idle(self.slots.busy)
        self.stats.sample(self.slots.used, len(self.outcomes), self.health.ok)
        for root in self.retries.due():
            self.dirty[root] = None
            self._schedule_fill()
        for ref in self.supervisors.all():
            ref.tell(Tick())
        if not self.health.ok:
            if now < self.retry_at:
                return
            self.retry_at = now + 0.5
            # A write, not a ping: a Redis refusing writes (OOM, READONLY) answers pings.
            if self.health.call("probe", self.upkeep.probe) is None:
                return
            self.health.changed(True, "Redis answered")
            self._reconcile()
        self.health.call("upkeep", lambda: self.upkeep.tick(self.slots.job_ids()))
        if self.upkeep.fenced:
            self._lost_name()
            return
        if self.outcomes:
            self._flush()
        if now >= self.next_reconcile:
            self._reconcile()

    @handles(Reconnected)
    def _on_reconnected(self, _message: Reconnected) -> None:
        self.health.changed(True, "pub/sub subscribed")
        self._reconcile()

    @handles(ListenerDown)
    def _on_listener_down(self, message: ListenerDown) -> None:
        self.health.changed(False, message.error)

    # -- supervisors and slots ---------------------------------------------------------
    def _schedule_fill(self) -> None:
        # Many releases queued behind one Fill are handled by one batch of claims.
        if not self.fill_pending:
            self.fill_pending = True
            self.actor_ref.tell(Fill())

    def _released(self, root: str) -> None:
        if not self.slots.busy(root):
            self.supervisors.idle(root)

    def _start_supervisor(self, root: str) -> Ref:
        return TreeSupervisor.start(self.actor_ref, self.store, root, self.name,
                                    self.log_dir, self.abort_grace, self.on_log_growth,
                                    self.upkeep.registry, self.log_keep)

    def _forget(self, root: str) -> None:
        """Drop a done tree nothing of runs here (if a rerun did not just revive it)."""
        self.outcomes.forget_tree(root)
        self.health.tree_errors.forget(root)
        if self.health.call("done check", functools.partial(self.store.tree_finished, root)):
            self.health.call("forget", functools.partial(self.store.forget_node_tree,
                                                         self.name, root))

    def _redis_changed(self, ok: bool, detail: str) -> None:
        if not ok:
            self.retry_at = 0.0
            self.stats.count("redis_outages")
        else:  # connections made before the outage may still reach an old primary
            self.health.call("reset", self.store.reset_connections)
        self.upkeep.redis_changed(ok, detail)

    # -- losing the node name ------------------------------------------------------------
    def _lost_name(self) -> None:
        """Another process holds this node's name: claim nothing, stop what runs here
        (Redis refuses its outcomes anyway), and register again as a new instance once
        the name is free."""
        if not self.fenced:
            self.fenced = True
            self.dirty.clear()
            self.undo_pending.clear()
            self.outcomes.clear()  # refused anyway: the newer process settled them
            why = f"this process lost node name {self.name} to another process"
            for ref in self.supervisors.all():
                ref.tell(AbortCheck(why))
        if self.health.call("re-register", self.upkeep.reregister):
            self.fenced = False
            self._reconcile()

    # -- outcomes and claims ------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.outcomes or not self.health.ok:
            return
        try:
            done = self.outcomes.flush(self._may_claim(), self.upkeep.holder)
        except StoreUnavailableError as exc:  # the batch is back in the outbox
            self.health.changed(False, str(exc))
            return
        except Exception as exc:  # not an outage, but an outcome is never dropped
            self.health.tree_errors.failed("(all)", "recording outcomes", f"{exc!r}")
            return
        self.stats.recorded(done.messages, done.outcomes)
        if done.fenced:
            self.upkeep.lease.fence()
        for seconds, root in done.retries:
            self.retries.set(seconds, root)
        for claim in done.claims:
            self._dispatch(claim.root, [claim])
        for root in done.ready:
            self.dirty[root] = None
        for root, ids in done.ended.items():
            ref = self.supervisors.get(root)
            if ref is not None:
                ref.tell(JobsEnded(tuple(ids)))

    def _may_claim(self) -> bool:
        if not self.health.ok or self.draining or self.fenced:
            return False
        return bool(self.health.call("lease", self.upkeep.may_claim))

    def _fill(self) -> None:
        if not self._may_claim():
            return
        holder = self.upkeep.holder
        for root in list(self.dirty):
            free = self.slots.free
            if free <= 0:
                return
            claims = self.health.tree_call(root, "claim", functools.partial(
                self.store.claim, root, self.name, free, holder))
            if claims is None:
                if not self.health.ok or self.upkeep.fenced:
                    return  # the tree stays dirty for later
                self.dirty.pop(root, None)  # its error is logged; reconciliation retries
                continue
            self.dirty.pop(root, None)
            if len(claims) == free:
                # Rotate: a tree that filled every slot goes behind the others.
                self.dirty[root] = None
            if claims:
                self._dispatch(root, claims)
        for root in list(self.undo_pending):
            self._undo(root)

    def _dispatch(self, root: str, claims: list[Claim]) -> None:
        # A run made here already (its claim lost in a failover) never runs twice.
        claims = [claim for claim in claims if self.outcomes.started(claim)]
        if not claims:
            self._schedule_fill()  # its outcome may be on its way again
            return
        self.stats.count("claims", len(claims))
        runners = []
        for claim in claims:
            runner = self.pool.take()
            self.slots.occupy(claim.id, root, runner)
            runners.append(runner)
        self.supervisors.ensure(root).tell(StartJobs(tuple(claims), tuple(runners)))

    def _undo(self, root: str) -> None:
        """Start undo hooks owed here for an aborted tree, within the free slots."""
        free = self.slots.free
        if free <= 0 or self.fenced:
            self.undo_pending.add(root)
            return
        ids = self.health.tree_call(root, "undo", lambda: self.upkeep.claim_undo(root, free))
        if ids is None or len(ids) == free:
            self.undo_pending.add(root)  # Redis down, or there may be more
        else:
            self.undo_pending.discard(root)
        if ids:
            runners = []
            for job_id in ids:
                runner = self.pool.take()
                self.slots.occupy(undo_key(job_id), root, runner)
                runners.append(runner)
            self.supervisors.ensure(root).tell(RunUndo(tuple(ids), tuple(runners)))

    def _reconcile(self) -> None:
        """Re-read every tree this node has jobs in, and act on what pub/sub missed."""
        self.next_reconcile = time.monotonic() + self.upkeep.reconcile_interval
        self.stats.count("reconciliations")
        # First: a failover may have lost outcomes that everything below builds on.
        if not self.health.call("failover check", lambda: self.failover.check(self.outcomes)):
            return
        found = self.health.call("reconcile", lambda: self.upkeep.tree_flags(self.name))
        if found is None:
            return
        for root, (finished, aborting) in found.items():
            self._reconcile_tree(root, finished, aborting)
        self._flush()
        self._fill()

    def _reconcile_tree(self, root: str, finished: bool, aborting: bool) -> None:
        if aborting:
            # Even when the tree is done: this node may have missed the abort (down, or
            # pub/sub lost it) and still owe undo hooks; claim_undo runs each once.
            self._undo(root)
        if not finished:
            self._reclaim(root)
        if finished and not self.slots.busy(root) and root not in self.undo_pending:
            self._forget(root)
        elif aborting:
            self.dirty.pop(root, None)
            ref = self.supervisors.get(root)
            if ref is not None:
                ref.tell(AbortCheck())
        else:
            self.dirty[root] = None

    def _reclaim(self, root: str) -> None:
        """Jobs Redis shows RUNNING here that this process does not know of. Claimed by
        this process (a claim whose reply was lost): nobody else would run or reap them,
        so run them now, even when draining. Claimed by a stale process of this node's
        name (frozen past its lease): end them, never run them here."""
        if self.fenced or not self.health.ok \
                or not self.health.call("lease", self.upkeep.may_claim):
            return
        holder = self.upkeep.holder
        running = self.health.tree_call(root, "reclaim", functools.partial(
            self.store.claimed_on, root, self.name))
        if not running:
            return
        # (A job whose outcome was recorded is not known here: if Redis shows it RUNNING,
        # a failover lost the outcome, and its claim, read again, brings it back.)
        known = set(self.slots.job_ids()) | self.outcomes.pending_ids()
        if any(owner != holder.instance for owner in running.values()):
            ended = self.health.tree_call(root, "reap", functools.partial(
                self.upkeep.reap_foreign, root))
            if ended:
                log.warning("ended jobs %s of tree %s: a stale process of node %s claimed "
                            "them", ended, root, self.name)
        for job_id, owner in running.items():
            if job_id in known or owner != holder.instance:
                continue
            claim = self.health.tree_call(root, "reclaim", functools.partial(
                self.store.reclaim, root, job_id, holder))
            if claim is not None:
                log.warning("job %s was RUNNING here unknown to this node (a lost reply); "
                            "running it now", job_id)
                self._dispatch(root, [claim])
