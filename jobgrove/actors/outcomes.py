"""The outcomes of the jobs this process runs, from a job's claim until Redis is known
to keep its outcome: the node actor's memory across outages and failovers.

* ``Run``: each job this process claimed, with the run token, attempt and tree run of
  its claim (what its outcome is recorded with).
* The outbox: outcomes waiting to be recorded (Redis unreachable, or the next batch).
* The journal: outcomes Redis took, kept ``JOURNAL_KEEP`` seconds more. Replication
  to replicas is asynchronous: after a failover the new primary may lack the last
  transitions. Then (``FailoverWatch``) every journal entry is recorded again: the
  store compares run tokens, so one the new primary has is "stale" and changes
  nothing, one it lacks is applied, and a job whose very claim was lost (WAITING
  again there) is claimed again and finished in one step (``lua/finish.lua``).

A job this process ran never runs twice because a claim came back: a claim of a job
it runs, has an outcome waiting for, or recorded, for the same attempt and tree run
(``started`` is False), is that same run; its outcome goes with the new run token.

Plain code used from the node actor's thread.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from jobgrove.actors.ledger import Outbox
from jobgrove.actors.messages import Fence, JobDone
from jobgrove.messaging.records import Claim, Finish, Holder, Outcome, Verdict
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

Message = JobDone | Fence
#: Seconds a recorded outcome is kept for a failover to come (longer while Redis is
#: unreachable: entries are only dropped when a check finds the same primaries).
JOURNAL_KEEP = 30.0


@dataclasses.dataclass(slots=True)
class Run:
    """A job this process claimed: the claim its outcome is recorded with (kept small:
    a node keeps one per job it ran in the last ``JOURNAL_KEEP`` seconds)."""

    root: str
    token: str
    attempt: int
    run: int
    #: Its outcome (ok, summary, result) once Redis took it (the journal), and when.
    recorded: tuple[bool, str, Any] | None = None
    recorded_at: float = 0.0


@dataclasses.dataclass
class Recorded:
    """What a batch of outcomes did, for the node actor to act on."""

    #: Successes by tree (their supervisors stop tracking them).
    ended: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Parents claimed for this node in the same step.
    claims: list[Claim] = dataclasses.field(default_factory=list)
    #: Trees with a job that became runnable here.
    ready: list[str] = dataclasses.field(default_factory=list)
    #: (seconds, root): failed attempts that will be retried.
    retries: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    #: Redis refused an outcome: another process holds this node's name now.
    fenced: bool = False
    #: The batch sent and what Redis made of each (for the node's metrics).
    messages: list[Message] = dataclasses.field(default_factory=list)
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)


class Outcomes:
    def __init__(self, store: Store, name: str, keep: float = JOURNAL_KEEP,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.name = name
        self.keep = keep
        self.clock = clock
        self.outbox: Outbox[Message] = Outbox(lambda m: m.job_id)
        self.runs: dict[str, Run] = {}
        self._replays: set[str] = set()

    def __len__(self) -> int:
        return len(self.outbox)

    def add(self, message: Message) -> None:
        self.outbox.add(message)

    def pending_ids(self) -> set[str]:
        """Jobs whose outcome waits here, or was given up on: never run again."""
        return self.outbox.job_ids()

    def started(self, claim: Claim) -> bool:
        """A claim: True to run it. False if it is a run this process made already
        (its claim was lost in a failover and made again): not run a second time."""
        run = self.runs.get(claim.id)
        if run is None or (run.root, run.attempt, run.run) != (claim.root, claim.attempt,
                                                               claim.run):
            self.runs[claim.id] = Run(claim.root, claim.token, claim.attempt, claim.run)
            return True
        run.token = claim.token
        log.warning("job %s was claimed again after a failover lost its claim; it ran here "
                    "already: %s", claim.id, "its outcome is recorded again"
                    if run.recorded else "its outcome will be recorded, not run twice")
        if run.recorded is not None:
            self._replay(claim.id, run)
        return False

    def _replay(self, job_id: str, run: Run) -> None:
        outcome, run.recorded = run.recorded, None
        assert outcome is not None
        self._replays.add(job_id)
        self.outbox.add(JobDone(run.root, job_id, run.token, *outcome))

    def replay_all(self) -> int:
        """After a failover: every outcome of the journal goes to Redis again."""
        replayed = [(job_id, run) for job_id, run in self.runs.items() if run.recorded]
        for job_id, run in replayed:
            self._replay(job_id, run)
        return len(replayed)

    def prune(self) -> None:
        """The primaries are the ones that took the journal's outcomes: forget those
        recorded more than ``keep`` seconds ago (their replicas have them)."""
        limit = self.clock() - self.keep
        self.runs = {j: r for j, r in self.runs.items()
                     if r.recorded is None or r.recorded_at > limit}

    def clear(self) -> None:
        """This process lost its node name: the newer process settled its jobs."""
        self.outbox.take()
        self.runs.clear()
        self._replays.clear()

    def forget_tree(self, root: str) -> None:
        self.outbox.forget_tree(root)

    def flush(self, claim: bool, holder: Holder) -> Recorded:
        """Record the outbox (``claim``: parents that become runnable here may be claimed
        in the same step). On any error the batch goes back, in front (replaying is
        safe: a second finish of a run is "stale")."""
        batch = self.outbox.take()
        items = [self._item(m, claim, holder) for m in batch]
        try:
            outcomes = self.store.finish_many(items)
        except BaseException:
            self.outbox.put_back(batch)
            raise
        done = self._recorded(items, outcomes)
        done.messages, done.outcomes = batch, outcomes
        return done

    def _item(self, message: Message, claim: bool, holder: Holder) -> Finish:
        run = self.runs.get(message.job_id)
        return message.finish(self.name, claim, holder,
                              None if run is None else (run.token, run.attempt, run.run))

    def _recorded(self, items: list[Finish], outcomes: list[Outcome]) -> Recorded:
        done = Recorded()
        now = self.clock()
        for item, outcome in zip(items, outcomes):
            replay = item.job_id in self._replays
            self._replays.discard(item.job_id)
            if item.ok:
                done.ended.setdefault(item.root, []).append(item.job_id)
            run = self.runs.get(item.job_id)
            if outcome.verdict is Verdict.ERROR:
                # Not an outage: a reply that will not change on a retry (a record of
                # the tree that Redis cannot work on). Never re-run it; end it FAILED
                # instead, so that its tree still ends.
                self.outbox.give_up(item.job_id, item.root)
                self.runs.pop(item.job_id, None)
                if replay:  # a replayed outcome was recorded once already
                    log.error("cannot record the outcome of job %s again: %s",
                              item.job_id, outcome.state)
                else:
                    self._fail(item, outcome.state)
            elif outcome.verdict is Verdict.FENCED:
                done.fenced = True
                self.runs.pop(item.job_id, None)
            else:
                if replay and outcome.verdict is Verdict.OK:
                    log.warning("the outcome of job %s was missing after a failover: "
                                "recorded again (%s)", item.job_id, outcome.state)
                elif outcome.verdict is Verdict.STALE and not replay:
                    log.info("outcome of job %s not recorded: it is %s already",
                             item.job_id, outcome.state or "gone")
                if run is not None:
                    run.recorded = (item.ok, item.summary, item.result)
                    run.recorded_at = now
            if outcome.retry_in is not None:
                done.retries.append((outcome.retry_in, item.root))
            if outcome.claimed is not None:
                done.claims.append(outcome.claimed)
            elif outcome.ready_on == self.name:
                done.ready.append(item.root)
        return done


    def _fail(self, item: Finish, error: str) -> None:
        why = f"corrupt record: its outcome ({'ok' if item.ok else item.summary}) could " \
              f"not be recorded: {error}"
        try:
            # Only this claim, if it still runs here: never another run of the job.
            ended = self.store.fail(item.root, item.job_id, why,
                                    (item.token, item.holder or self.store.holder))
        except Exception as exc:
            ended = None
            log.error("cannot record the outcome of job %s (%s), nor end it FAILED (%s): "
                      "its tree needs an abort", item.job_id, error, exc)
        if ended is not None:
            log.error("cannot record the outcome of job %s: %s; ended it FAILED (%s)",
                      item.job_id, error, ended.verdict)


class FailoverWatch:
    """Notices when the servers taking this node's writes change (a failover, or a
    Redis restarted: it may have lost the last writes), from ``Store.identity``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: frozenset[str] | None = None

    def check(self, outcomes: Outcomes) -> bool:
        """Compare with the last check. Changed: replay the journal; else prune it.
        Returns True (StoreUnavailableError if Redis does not answer)."""
        now = self.store.identity()
        if self.seen is not None and now is not None and now != self.seen:
            count = outcomes.replay_all()
            log.warning("Redis failover (or restart) detected: the servers taking writes "
                        "changed; recording again the %d outcome(s) of the last %.0f s",
                        count, outcomes.keep)
        else:
            outcomes.prune()
        self.seen = now if now is not None else self.seen
        return True
