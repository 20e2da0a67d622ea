"""The job actor: runs one job's code in its own thread and reports the outcome."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import pykka

from jobgrove.actors.messages import JobDone, UndoDone
from jobgrove.errors import JobAbortedError, JobFailedError
from jobgrove.jobs import Job, JobContext

log = logging.getLogger(__name__)


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (JobFailedError, JobAbortedError)):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class JobActor(pykka.ThreadingActor):
    """Runs ``job.run(ctx)`` once, on start, then tells its supervisor and stops.

    The actor's thread is the job's thread: nothing else is sent to it. Abort goes
    around it, through ``ctx.abort_event`` and ``job.abort(ctx)``, set by the supervisor.
    """

    def __init__(self, supervisor: pykka.ActorRef[Any], job: Job, ctx: JobContext,
                 token: str, undo: bool = False) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.job = job
        self.ctx = ctx
        self.token = token
        self.undo = undo

    def on_start(self) -> None:
        try:
            if self.undo:
                self._undo()
            else:
                self._run()
        finally:
            self.ctx.log.close()
            self.stop()

    def _run(self) -> None:
        ctx = self.ctx
        try:
            result = self.job.run(ctx)
        except BaseException as exc:  # job code may raise anything; it must not kill the node
            if not isinstance(exc, (JobFailedError, JobAbortedError)):
                ctx.log.error("".join(traceback.format_exception(exc)).rstrip())
            summary = _summary(exc)
            ctx.log.info(f"job ended: {summary}")
            self._tell(JobDone(ctx.root, ctx.job_id, self.token, False, summary))
            return
        summary = "ok"
        ctx.log.info("job ended: ok")
        self._tell(JobDone(ctx.root, ctx.job_id, self.token, True, summary, result))

    def _undo(self) -> None:
        ctx = self.ctx
        ctx.log.info("tree aborted: undoing this job's work (on_tree_aborted)")
        try:
            self.job.on_tree_aborted(ctx)
            ctx.log.info("undo finished")
        except BaseException as exc:
            ctx.log.error("undo failed: " + "".join(traceback.format_exception(exc)).rstrip())
        self._tell(UndoDone(ctx.root, ctx.job_id))

    def _tell(self, message: Any) -> None:
        try:
            self.supervisor.tell(message)
        except pykka.ActorDeadError:
            log.info("job %s finished after its supervisor stopped; outcome %r dropped",
                     self.ctx.job_id, message)
