"""The tree supervisor: one per tree that has jobs running on this node.

It spawns a job actor per claimed job, forwards their outcomes to the node actor,
and stops its tree at once on a local failure (siblings are asked to abort before
the news has even gone through Redis). A job that ignores its abort is fenced off
after the grace period: recorded ABORTED, and its late result discarded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any

import pykka

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.messages import (
    AbortCheck,
    Fence,
    JobDone,
    JobsEnded,
    RunJob,
    RunUndo,
    StartJobs,
    Tick,
    UndoDone,
)
from jobgrove.errors import JobgroveError
from jobgrove.jobs.api import Job, JobContext, TreeContext, kind_class
from jobgrove.jobs.log import GrowthListener, JobLog
from jobgrove.jobs.output import JobLogger
from jobgrove.messaging.records import Claim
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store
from jobgrove.targets import graft

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Running:
    token: str
    job: Job
    ctx: JobContext
    #: A failure of this attempt is not the job's last word (retries left).
    retries_left: bool = False
    timeout: float | None = None
    started: float = 0.0
    timed_out: bool = False
    abort_deadline: float | None = None
    grace: float = 0.0


class TreeSupervisor(Actor):
    def __init__(self, node: pykka.ActorRef[Any], store: Store, root: str, node_name: str,
                 log_dir: str, abort_grace: float, on_log_growth: GrowthListener | None,
                 registry: Registry | None = None, log_keep: int = 0) -> None:
        super().__init__()
        self.node = node
        self.store = store
        self.root = root
        self.node_name = node_name
        self.log_dir = log_dir
        self.abort_grace = abort_grace
        self.on_log_growth = on_log_growth
        self.registry = registry
        self.log_keep = log_keep  # bytes of a job's log end sent with its outcome
        self.running: dict[str, _Running] = {}
        #: The tree's run whose jobs this supervisor runs (a rerun starts a new one).
        self.run = 0
        self.aborting = False

    @handles(StartJobs)
    def _on_start_jobs(self, message: StartJobs) -> None:
        for claim, runner in zip(message.claims, message.runners):
            if claim.run > self.run:  # a rerun: the abort of the last run is over
                self.run, self.aborting = claim.run, False
            try:
                self._start(claim, runner)
            except Exception as exc:  # whatever it was, the job's outcome must not vanish
                log.exception("cannot start job %s", claim.id)
                self.running.pop(claim.id, None)
                self.node.tell(JobDone(self.root, claim.id, claim.token, False,
                                       f"cannot start: {type(exc).__name__}: {exc}"))

    @handles(JobsEnded)
    def _on_jobs_ended(self, message: JobsEnded) -> None:
        for job_id in message.job_ids:
            self.running.pop(job_id, None)

    @handles(AbortCheck)
    def _on_abort_check(self, message: AbortCheck) -> None:
        self._abort_all(message.why)

    @handles(Tick)
    def _on_tick(self, _message: Tick) -> None:
        self._check_fences()

    @handles(RunUndo)
    def _on_run_undo(self, message: RunUndo) -> None:
        for job_id, runner in zip(message.job_ids, message.runners):
            self._start_undo(job_id, runner)

    @handles(UndoDone)
    def _on_undo_done(self, message: UndoDone) -> None:
        self.node.tell(message)

    def on_stop(self) -> None:
        # Jobs still running when the node stops immediately: ask them to stop.
        self._abort_all("the node is stopping")

    # -- starting ------------------------------------------------------------------
    def _context(self, claim: Claim, params: dict[str, Any], log_file: JobLog,
                 result: Any = None) -> JobContext:
        # The callables below run in the job's own thread (the store is thread-safe).
        root, store, registry = self.root, self.store, self.registry

        def write_context(key: str, value: Any) -> None:
            json.dumps(value)  # refuse what cannot be stored, in the job's own thread
            store.set_context(root, key, value)

        def graft_under(spec: Any, under: str) -> list[str]:
            if registry is None:
                raise JobgroveError("grafting needs the node's registry")
            return graft(store, registry, under, spec, within=root)

        return JobContext(
            job_id=claim.id, root=root, node=self.node_name, params=params,
            log=JobLogger(log_file),
            results=claim.results, children=list(claim.spec.get("children", [])),
            context=TreeContext(claim.context, write_context), abort_event=threading.Event(),
            abort_grace=self.abort_grace, result=result, parent=claim.spec.get("parent"),
            attempt=claim.attempt, retries=int(claim.spec.get("retries") or 0),
            grafter=graft_under, progress_sink=ProgressThrottle(store, root, claim))

    def _start(self, claim: Claim, runner: pykka.ActorRef[Any]) -> None:
        kind = claim.spec.get("kind", "")
        params = claim.spec.get("params") or {}
        log_file = JobLog(self.log_dir, claim.id, self.on_log_growth, keep=self.log_keep)
        cls = kind_class(kind)
        if cls is None:
            self._fail_early(claim, log_file, f"unknown kind {kind!r} on node "
                                              f"{self.node_name} (load it with --import)")
            return
        ctx = self._context(claim, params, log_file)
        try:
            job = cls()
        except Exception as exc:
            self._fail_early(claim, log_file, f"cannot create job of kind {kind!r}: {exc}")
            return
        timeout = claim.spec.get("timeout")
        self.running[claim.id] = _Running(
            claim.token, job, ctx, retries_left=claim.attempt <= ctx.retries,
            timeout=float(timeout) if timeout else None, started=time.monotonic())
        if self.aborting:
            self._request_abort(claim.id, "the tree is aborting")
        # A job with a timeout reports success through here too: it may have timed out.
        reply_to = self.actor_ref if timeout else self.node
        runner.tell(RunJob(self.actor_ref, reply_to, job, ctx, claim.token))

    def _fail_early(self, claim: Claim, log_file: JobLog, summary: str) -> None:
        """The job cannot even start here: it fails (and its tree aborts)."""
        log_file.note(f"ERROR {summary}")
        log_file.close()
        self.node.tell(JobDone(self.root, claim.id, claim.token, False, summary,
                               kind=str(claim.spec.get("kind", "")),
                               log_tail=log_file.tail()))

    def _start_undo(self, job_id: str, runner: pykka.ActorRef[Any]) -> None:
        try:
            spec = self.store.job_spec(self.root, job_id)
            result = self.store.results(self.root, [job_id]).get(job_id)
        except Exception as exc:
            log.warning("cannot prepare undo of job %s: %s", job_id, exc)
            self.node.tell(UndoDone(self.root, job_id))
            return
        cls = kind_class(spec["kind"])
        try:
            if cls is None:
                raise LookupError(f"kind {spec['kind']!r} is not registered here")
            claim = Claim(self.root, job_id, "undo", spec, {}, {})
            ctx = self._context(claim, spec.get("params") or {}, JobLog(self.log_dir, job_id,
                                                      self.on_log_growth), result)
            job = cls()
        except Exception as exc:
            log.warning("cannot undo job %s: %s", job_id, exc)
            self.node.tell(UndoDone(self.root, job_id))
            return
        runner.tell(RunJob(self.actor_ref, self.node, job, ctx, "undo", undo=True))

    # -- finishing -------------------------------------------------------------------
    @handles(JobDone)
    def _on_job_done(self, done: JobDone) -> None:
        current = self.running.get(done.job_id)
        if current is None or current.token != done.token:
            log.info("late result of job %s discarded (it was fenced off)", done.job_id)
            return
        del self.running[done.job_id]
        if current.timed_out:
            done = dataclasses.replace(done, ok=False, result=None,
                                       summary=f"timed out after {current.timeout:g}s")
        self.node.tell(done)
        # A failed attempt with retries left does not stop the tree: it runs again.
        if not done.ok and not self.aborting and not current.retries_left:
            self._abort_all(f"job {done.job_id} failed")

    def _abort_all(self, why: str) -> None:
        self.aborting = True
        for job_id in list(self.running):
            self._request_abort(job_id, why)

    def _request_abort(self, job_id: str, why: str) -> None:
        current = self.running[job_id]
        if current.abort_deadline is not None:
            return
        try:
            grace = float(current.job.stop_grace(current.ctx))
        except Exception:
            log.exception("stop_grace() of job %s raised", job_id)
            grace = self.abort_grace
        current.abort_deadline = time.monotonic() + grace
        current.grace = grace
        current.ctx.log.note(f"abort requested: {why}")
        current.ctx.abort_event.set()
        try:
            current.job.abort(current.ctx)
        except Exception:
            log.exception("abort() hook of job %s raised", job_id)

    def _check_fences(self) -> None:
        now = time.monotonic()
        for job_id, current in list(self.running.items()):
            if current.timeout is not None and not current.timed_out \
                    and now - current.started >= current.timeout:
                current.timed_out = True
                self._request_abort(job_id, f"timed out after {current.timeout:g}s")
            if current.abort_deadline is not None and now >= current.abort_deadline:
                del self.running[job_id]
                summary = (f"did not stop within {current.grace:g}s of the abort request; "
                           "its late result will be discarded")
                if current.timed_out:
                    summary = f"timed out after {current.timeout:g}s; {summary}"
                current.ctx.log.note(summary)
                self.node.tell(Fence(self.root, job_id, current.token, summary,
                                     current.job.kind, None,
                                     current.ctx.log.tail()))


class ProgressThrottle:
    """``ctx.progress`` of one job: stored at most ten times a second, and always when
    the job says it is done (fraction 1.0). Runs in the job's thread."""

    INTERVAL = 0.1

    def __init__(self, store: Store, root: str, claim: Claim) -> None:
        self.store = store
        self.root = root
        self.job_id = claim.id
        self.token = claim.token
        self._last = 0.0

    def __call__(self, fraction: float, message: str | None) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < self.INTERVAL:
            return
        self._last = now
        self.store.set_progress(self.root, self.job_id, self.token, fraction, message)
