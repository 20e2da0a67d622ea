"""The tree rules as a plain in-memory model.

The Redis store applies the same rules atomically in Lua; this model is their
readable statement, used by unit tests and by the store's contract tests (which
replay random operations against both and compare every job's state and cause).
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
    cause: str | None = None
    abort_requested: str | None = None  # cause, once a RUNNING job is asked to abort


class TreeModel:
    """One tree's jobs and the rules that move them."""

    def __init__(self, jobs: list[JobSpec]) -> None:
        self.jobs = {
            j.id: ModelJob(j, State.NEW if j.children else State.WAITING, len(j.children))
            for j in jobs
        }
        self.root = jobs[0].id
        self.abort_cause: str | None = None

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
        """Record a RUNNING job's outcome; returns the final state, None if stale."""
        job = self.jobs[job_id]
        if job.state is not State.RUNNING:
            return None
        if job.abort_requested is not None:
            self._move(job, State.ABORTED)
            job.cause = job.abort_requested
            return job.state
        if not ok:
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
