"""The tree rules as a plain in-memory model.

The Redis store applies the same rules atomically in Lua; this model is their
readable statement, used by unit tests and by the store's contract tests (which
replay random operations against both and compare every job's state and cause).

Beyond the state table of ``states``: a failed attempt with retries left goes back
to WAITING (``retry``); jobs can be grafted under a job that has not started
(``graft``); a done tree that did not succeed can run again (``rerun``).
"""

from __future__ import annotations

import dataclasses

from jobgrove.core.spec import JobSpec
from jobgrove.core.states import FINISHED, State, can_transition


@dataclasses.dataclass
class ModelJob:
    spec: JobSpec
    state: State
    pending: int
    children: list[str]
    cause: str | None = None
    abort_requested: str | None = None  # cause, once a RUNNING job is asked to abort
    attempt: int = 1


class TreeModel:
    """One tree's jobs and the rules that move them."""

    def __init__(self, jobs: list[JobSpec]) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self.root = jobs[0].id
        self.abort_cause: str | None = None
        self.run = 1
        self._add(jobs)

    def _add(self, jobs: list[JobSpec]) -> None:
        for j in jobs:
            self.jobs[j.id] = ModelJob(j, State.NEW if j.children else State.WAITING,
                                       len(j.children), list(j.children))

    def state(self, job_id: str) -> State:
        return self.jobs[job_id].state

    def runnable(self, node: str | None = None) -> list[str]:
        """WAITING jobs (on ``node`` if given)."""
        return [i for i, j in self.jobs.items()
                if j.state is State.WAITING and (node is None or j.spec.node == node)]

    def _move(self, job: ModelJob, new: State) -> None:
        if not can_transition(job.state, new):
            raise AssertionError(f"{job.spec.id}: {job.state} -> {new} is not allowed")
        job.state = new

    def start(self, job_id: str) -> bool:
        """Claim a WAITING job; False when it is not WAITING (never started twice)."""
        job = self.jobs[job_id]
        if job.state is not State.WAITING:
            return False
        self._move(job, State.RUNNING)
        return True

    def finish(self, job_id: str, ok: bool) -> State | None:
        """Record a RUNNING job's outcome; returns the state after, None if stale. A
        failure with retries left is a failed *attempt*: the job waits again."""
        job = self.jobs[job_id]
        if job.state is not State.RUNNING:
            return None
        if job.abort_requested is not None:
            self._move(job, State.ABORTED)
            job.cause = job.abort_requested
            return job.state
        if not ok:
            if job.attempt <= job.spec.retries:
                job.state = State.WAITING  # a retry: the only way back from RUNNING
                job.attempt += 1
                return job.state
            self._move(job, State.FAILED)
            self._abort_tree(job_id)
            return job.state
        self._move(job, State.SUCCESS)
        parent_id = job.spec.parent
        if parent_id is not None:
            parent = self.jobs[parent_id]
            parent.pending -= 1
            if parent.pending == 0 and parent.state is State.NEW:
                self._move(parent, State.WAITING)
        return job.state

    def abort(self, job_id: str) -> State:
        """A user abort of ``job_id``: like a failure of it. Returns its state after."""
        job = self.jobs[job_id]
        if job.state in FINISHED:
            return job.state
        if job.state is State.RUNNING:
            job.abort_requested = job.abort_requested or job_id
        else:
            self._move(job, State.ABORTED)
            job.cause = job_id
        self._abort_tree(job_id)
        return job.state

    def _abort_tree(self, cause: str) -> None:
        if self.abort_cause is not None:
            return
        self.abort_cause = cause
        for job in self.jobs.values():
            if job.state in (State.NEW, State.WAITING):
                self._move(job, State.ABORTED)
                job.cause = cause
            elif job.state is State.RUNNING and job.abort_requested is None:
                job.abort_requested = cause

    @property
    def outcome(self) -> State:
        return self.jobs[self.root].state

    @property
    def done(self) -> bool:
        """The root is finished and nothing runs any more."""
        return self.outcome in FINISHED and not any(
            j.state is State.RUNNING for j in self.jobs.values())

    # -- trees that change ---------------------------------------------------------------
    def graft_refusal(self, parent_id: str) -> str | None:
        """Why nothing may be grafted under ``parent_id`` now, or None."""
        parent = self.jobs[parent_id]
        if self.abort_cause is not None:
            return "the tree is aborting"
        if parent.state not in (State.NEW, State.WAITING):
            return f"job {parent_id} is {parent.state.value}: it has started"
        return None

    def graft(self, parent_id: str, jobs: list[JobSpec]) -> str | None:
        """Add subtrees under a job that has not started; a WAITING parent goes back to
        NEW until they succeed. Returns the refusal, or None once added."""
        refusal = self.graft_refusal(parent_id)
        if refusal is not None:
            return refusal
        parent = self.jobs[parent_id]
        tops = [j.id for j in jobs if j.parent == parent_id]
        self._add(jobs)
        parent.children += tops
        parent.pending += len(tops)
        if parent.state is State.WAITING:
            parent.state = State.NEW  # it waits for its new children
        return None

    def rerun_refusal(self) -> str | None:
        if any(j.state is State.RUNNING for j in self.jobs.values()):
            return "a job of the tree is running"
        if self.outcome is State.SUCCESS:
            return "the tree succeeded"
        if self.outcome not in FINISHED:
            return "the tree is not done"
        return None

    def rerun(self) -> str | None:
        """FAILED and ABORTED jobs go back to NEW (children not all SUCCESS) or WAITING;
        SUCCESS jobs stay. Returns the refusal, or None."""
        refusal = self.rerun_refusal()
        if refusal is not None:
            return refusal
        self.abort_cause = None
        self.run += 1
        for job in self.jobs.values():
            if job.state in (State.FAILED, State.ABORTED):
                job.pending = sum(self.jobs[c].state is not State.SUCCESS
                                  for c in job.children)
                job.state = State.NEW if job.pending else State.WAITING
                job.cause = job.abort_requested = None
                job.attempt = 1
        return None
