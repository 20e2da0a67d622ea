"""The node actor: this node's slots, claims, outcomes and view of Redis.

It turns pub/sub hints and timer ticks into claims (WAITING -> RUNNING, up to the
concurrency limit), starts tree supervisors, and records outcomes through the
store's compare-and-set scripts. When Redis is unreachable it keeps outcomes in an
outbox, starts nothing, and replays the outbox once Redis answers again.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from jobgrove.actors.base import Actor
from jobgrove.actors.job_actor import JobActor
from jobgrove.actors.messages import (
    AbortCheck,
    Fence,
    Fill,
    Hint,
    JobDone,
    ListenerDown,
    Reconnected,
    RunUndo,
    StartJobs,
    Tick,
    UndoDone,
)
from jobgrove.actors.supervisor import TreeSupervisor
from jobgrove.actors.upkeep import Upkeep
from jobgrove.errors import StoreUnavailableError
from jobgrove.jobs.log import GrowthListener
from jobgrove.messaging.records import Claim, Finish
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

#: Seconds an idle tree supervisor is kept before it is stopped.
SUPERVISOR_IDLE = 2.0


class NodeActor(Actor):
    def __init__(self, store: Store, name: str, *, concurrency: int, log_dir: str,
                 abort_grace: float, upkeep: Upkeep,
                 on_log_growth: GrowthListener | None = None,
                 on_redis_change: Callable[[bool, str], None] | None = None) -> None:
        super().__init__()
        self.store = store
        self.name = name
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.abort_grace = abort_grace
        self.upkeep = upkeep
        self.on_log_growth = on_log_growth
        self.on_redis_change = on_redis_change
        self.supervisors: dict[str, pykka.ActorRef[Any]] = {}
        self.busy: dict[str, int] = {}  # root -> jobs (and undo hooks) running here
        self.dirty: dict[str, None] = {}  # roots that may have runnable jobs, in order
        self.idle_since: dict[str, float] = {}  # roots whose supervisor has nothing to do
        self.outbox: list[JobDone | Fence] = []
        self.idle_runners: list[pykka.ActorRef[Any]] = []
        self.undo_pending: set[str] = set()  # trees that may owe more undo hooks here
        self.unrecordable: set[str] = set()  # jobs whose outcome Redis refused for good
        self.runner_of: dict[str, pykka.ActorRef[Any]] = {}  # job id (or undo:id) -> actor
        self.fill_pending = False
        self.redis_ok = True
        self.draining = False
        self.next_reconcile = 0.0
        self.retry_at = 0.0

    # -- message dispatch ------------------------------------------------------------
    def receive(self, message: Any) -> None:
        if isinstance(message, JobDone | Fence):
            if message.job_id not in self.runner_of:
                # The other of a success and a fence that crossed: the first one counts
                # (the store would refuse the second anyway).
                log.info("late report of job %s ignored", message.job_id)
                return
            self._return_runner(message.job_id, retire=isinstance(message, Fence))
            self._released(message.root)
            self.outbox.append(message)
            self._schedule_fill()
        elif isinstance(message, UndoDone):
            self._return_runner(f"undo:{message.job_id}", retire=False)
            self._released(message.root)
        elif isinstance(message, Fill):
            self.fill_pending = False
            self._flush()
            self._fill()
        elif isinstance(message, Hint):
            self._hint(message)
        elif isinstance(message, Tick):
            self._tick()
        elif isinstance(message, Reconnected):
            self._set_redis(True, "pub/sub subscribed")
            self._reconcile()
        elif isinstance(message, ListenerDown):
            self._set_redis(False, message.error)
        return None

    def on_stop(self) -> None:
        for ref in list(self.supervisors.values()):
            ref.stop(block=False)
        self.supervisors.clear()
        for ref in self.idle_runners + list(self.runner_of.values()):
            ref.stop(block=False)
        self.idle_runners.clear()
        self.runner_of.clear()

    def _take_runner(self, key: str) -> pykka.ActorRef[Any]:
        runner = self.idle_runners.pop() if self.idle_runners else JobActor.start()
        self.runner_of[key] = runner
        return runner

    def _return_runner(self, key: str, retire: bool) -> None:
        runner = self.runner_of.pop(key, None)
        if runner is None:
            return
        if retire or len(self.idle_runners) >= self.concurrency:
            # Retired: its job ignored the abort and may run on, never reuse it (the
            # stop is queued behind that job: the thread ends once the code returns).
            # Or more idle threads than slots (after a burst of undo hooks).
            runner.stop(block=False)
        else:
            self.idle_runners.append(runner)

    def all_runners(self) -> list[pykka.ActorRef[Any]]:
        """Every job actor, idle or busy (``Node.stop`` waits for them)."""
        return [*self.idle_runners, *self.runner_of.values()]

    @property
    def running_count(self) -> int:
        return sum(self.busy.values())

    def _schedule_fill(self) -> None:
        # Many releases queued behind one Fill are handled by one batch of claims.
        if not self.fill_pending:
            self.fill_pending = True
            self.actor_ref.tell(Fill())

    def _released(self, root: str) -> None:
        left = self.busy.get(root, 0) - 1
        if left > 0:
            self.busy[root] = left
            return
        self.busy.pop(root, None)
        # Keep the idle supervisor a little: in a chain the parent usually starts next.
        self.idle_since[root] = time.monotonic()

    def _stop_idle_supervisors(self, older_than: float) -> None:
        now = time.monotonic()
        for root, since in list(self.idle_since.items()):
            if now - since >= older_than and root not in self.busy:
                del self.idle_since[root]
                ref = self.supervisors.pop(root, None)
                if ref is not None:
                    ref.stop(block=False)

    def _supervisor(self, root: str) -> pykka.ActorRef[Any]:
        self.idle_since.pop(root, None)
        ref = self.supervisors.get(root)
        if ref is None:
            ref = TreeSupervisor.start(self.actor_ref, self.store, root, self.name,
                                       self.log_dir, self.abort_grace, self.on_log_growth)
            self.supervisors[root] = ref
        return ref

    # -- Redis up/down -----------------------------------------------------------------
    def _set_redis(self, ok: bool, detail: str) -> None:
        if ok == self.redis_ok:
            return
        self.redis_ok = ok
        if ok:
            log.info("Redis reachable again (%s)", detail)
        else:
            log.error("Redis unavailable: %s; running jobs go on, nothing new starts", detail)
            self.retry_at = 0.0
        self.upkeep.redis_changed(ok, detail)
        if self.on_redis_change is not None:
            self.on_redis_change(ok, detail)

    def _store_call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreUnavailableError as exc:
            log.debug("%s failed: %s", what, exc)
            self._set_redis(False, str(exc))
            return None

    # -- hints and timers ----------------------------------------------------------------
    def _hint(self, hint: Hint) -> None:
        if hint.kind == "ready":
            self.dirty[hint.root] = None
            self._schedule_fill()
        elif hint.kind == "abort":
            # Only a hint: act if Redis says the tree is aborting (a stale or bogus
            # message must not abort a healthy tree).
            if not self._store_call("abort check", lambda: self.store.aborting(hint.root)):
                return
            self.dirty.pop(hint.root, None)
            ref = self.supervisors.get(hint.root)
            if ref is not None:
                ref.tell(AbortCheck())
            self._undo(hint.root)
        elif hint.kind == "done":
            if not self._store_call("done check", lambda: self.store.tree_finished(hint.root)):
                return
            self._undo(hint.root)  # the abort hint may have been lost
            if hint.root not in self.busy:
                self._store_call("forget", lambda: self.store.forget_node_tree(
                    self.name, hint.root))

    def _tick(self) -> None:
        now = time.monotonic()
        self._stop_idle_supervisors(SUPERVISOR_IDLE)
        for ref in list(self.supervisors.values()):
            ref.tell(Tick())
        if not self.redis_ok:
            if now < self.retry_at:
                return
            self.retry_at = now + 0.5
            # A write, not a ping: a Redis refusing writes (OOM, READONLY) answers pings.
            if self._store_call("probe", lambda: self.upkeep.probe()) is None:
                return
            self._set_redis(True, "Redis answered")
            self._reconcile()
        self._store_call("upkeep", lambda: self.upkeep.tick(self.running_ids()))
        if self.outbox:
            self._flush()
        if now >= self.next_reconcile:
            self._reconcile()

    def running_ids(self) -> list[str]:
        return self.upkeep.running_ids()

    # -- outcomes and claims ------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.outbox or not self.redis_ok:
            return
        batch, self.outbox = self.outbox, []
        claim = not self.draining
        items = [Finish(m.root, m.job_id, m.token, m.ok, m.summary, m.result, self.name, claim)
                 if isinstance(m, JobDone) else Finish(m.root, m.job_id, m.token, False,
                                                       m.summary, None, self.name)
                 for m in batch]
        try:
            outcomes = self.store.finish_many(items)
        except StoreUnavailableError as exc:
            # Some may have been applied before the connection broke: replaying them is
            # safe, the run token makes a second finish a no-op ("stale").
            self.outbox = batch + self.outbox
            self._set_redis(False, str(exc))
            return
        for item, outcome in zip(items, outcomes):
            self.upkeep.finished(item.job_id)
            if outcome.verdict == "error":
                # Not an outage: a reply that will not change on a retry. Never re-run it.
                self.unrecordable.add(item.job_id)
                log.error("cannot record the outcome of job %s: %s", item.job_id,
                          outcome.state)
            elif outcome.verdict == "stale":
                log.info("outcome of job %s not recorded: it is %s already", item.job_id,
                         outcome.state or "gone")
            if outcome.claimed is not None:
                self._dispatch(item.root, [outcome.claimed])
            elif outcome.ready_on == self.name:
                self.dirty[item.root] = None

    def _fill(self) -> None:
        if not self.redis_ok or self.draining:
            return
        for root in list(self.dirty):
            free = self.concurrency - self.running_count
            if free <= 0:
                return
            claims = self._store_call("claim", functools.partial(
                self.store.claim, root, self.name, free))
            if claims is None:
                return  # Redis is down; the tree stays dirty for later
            if len(claims) < free:
                self.dirty.pop(root, None)
            else:
                # Rotate: a tree that filled every slot goes behind the others.
                self.dirty.pop(root, None)
                self.dirty[root] = None
            if claims:
                self._dispatch(root, claims)
        for root in list(self.undo_pending):
            self._undo(root)

    def _dispatch(self, root: str, claims: list[Claim]) -> None:
        self.busy[root] = self.busy.get(root, 0) + len(claims)
        runners = []
        for claim in claims:
            self.upkeep.started(claim.id, root)
            runners.append(self._take_runner(claim.id))
        self._supervisor(root).tell(StartJobs(tuple(claims), tuple(runners)))

    def _undo(self, root: str) -> None:
        """Start undo hooks owed here for an aborted tree, within the free slots."""
        free = self.concurrency - self.running_count
        if free <= 0:
            self.undo_pending.add(root)
            return
        ids = self._store_call("undo", lambda: self.upkeep.claim_undo(root, free))
        if ids is None or len(ids) == free:
            self.undo_pending.add(root)  # Redis down, or there may be more
        else:
            self.undo_pending.discard(root)
        if ids:
            self.busy[root] = self.busy.get(root, 0) + len(ids)
            runners = tuple(self._take_runner(f"undo:{i}") for i in ids)
            self._supervisor(root).tell(RunUndo(tuple(ids), runners))

    def _reconcile(self) -> None:
        """Re-read every tree this node has jobs in, and act on what pub/sub missed."""
        self.next_reconcile = time.monotonic() + self.upkeep.reconcile_interval
        found = self._store_call("reconcile", lambda: self.upkeep.tree_flags(self.name))
        if found is None:
            return
        for root, (finished, aborting) in found.items():
            if aborting:
                # Even when the tree is done: this node may have missed the abort (down,
                # or pub/sub lost it) and still owe undo hooks; claim_undo runs each once.
                self._undo(root)
            if not finished:
                self._reclaim(root)
            if finished and root not in self.busy and root not in self.undo_pending:
                self._store_call("forget", functools.partial(
                    self.store.forget_node_tree, self.name, root))
            elif aborting:
                self.dirty.pop(root, None)
                ref = self.supervisors.get(root)
                if ref is not None:
                    ref.tell(AbortCheck())
            else:
                self.dirty[root] = None
        self._flush()
        self._fill()

    def _reclaim(self, root: str) -> None:
        """Run the jobs Redis shows RUNNING here that this node does not know of: a
        claim (or a parent claimed by a finish) whose reply was lost with the
        connection. Nobody else would ever run or reap them: our lease is alive."""
        running = self._store_call("reclaim", functools.partial(
            self.store.running_on, root, self.name))
        if not running:
            return
        known = set(self.upkeep.running_ids()) | {m.job_id for m in self.outbox} \
            | self.unrecordable
        for job_id in running:
            if job_id in known:
                continue
            claim = self._store_call("reclaim", functools.partial(
                self.store.reclaim, root, job_id))
            if claim is not None:
                log.warning("job %s was RUNNING here unknown to this node (a lost reply); "
                            "running it now", job_id)
                self._dispatch(root, [claim])

    # -- shutdown ---------------------------------------------------------------------------
    def drain(self) -> None:
        """Stop claiming: running jobs finish and are recorded, nothing new starts."""
        self.draining = True
