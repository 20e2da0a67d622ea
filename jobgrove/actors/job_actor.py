"""Job actors: each runs one job at a time in its own thread and reports the outcome.

The node keeps a pool of them, one per concurrency slot, so a running job always has
an actor (and a thread) of its own without paying for a new thread per job. A job
actor whose job ignored an abort is retired, never reused: it stops once that code
finally returns.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Any

import pykka

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.messages import JobDone, RunJob, UndoDone
from jobgrove.errors import JobAbortedError, JobFailedError
from jobgrove.jobs import output

log = logging.getLogger(__name__)


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (JobFailedError, JobAbortedError)):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class JobActor(Actor):
    """Runs the jobs it is given, one at a time. Nothing else is sent to it while a job
    runs: abort goes around it, through ``ctx.abort_event`` and ``job.abort(ctx)``."""

    @handles(RunJob)
    def _on_run(self, message: RunJob) -> None:
        # While the job's code runs, its print() and logging go to its log.
        routed = output.current.set(message.ctx.log.job_log)
        try:
            if message.undo:
                self._undo(message)
            else:
                self._run(message)
        finally:
            output.current.reset(routed)
            message.ctx.log.close()

    def _run(self, msg: RunJob) -> None:
        ctx = msg.ctx
        attempt = f" (attempt {ctx.attempt} of {ctx.retries + 1})" if ctx.retries else ""
        ctx.log.note(f"started {msg.job.kind} on {ctx.node}{attempt}")
        started = time.monotonic()
        try:
            result = msg.job.run(ctx)
        except BaseException as exc:  # job code may raise anything; it must not kill the node
            if not isinstance(exc, (JobFailedError, JobAbortedError)):
                ctx.log.note("ERROR " + "".join(traceback.format_exception(exc)).rstrip())
            self._failed(msg, _summary(exc), started)
            return
        if ctx.log.failure is not None:  # (job code that caught its LogWriteError)
            self._failed(msg, ctx.log.failure, started)
            return
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            self._failed(msg, f"result is not JSON-serializable: {exc}", started)
            return
        ctx.log.note("job ended: ok")
        _tell(msg.node, JobDone(ctx.root, ctx.job_id, msg.token, True, "ok", result,
                                msg.job.kind, time.monotonic() - started, ctx.log.tail()))

    def _failed(self, msg: RunJob, summary: str, started: float) -> None:
        msg.ctx.log.note(f"job ended: {summary}")
        _tell(msg.reply_to, JobDone(msg.ctx.root, msg.ctx.job_id, msg.token, False, summary,
                                    None, msg.job.kind, time.monotonic() - started,
                                    msg.ctx.log.tail()))

    def _undo(self, msg: RunJob) -> None:
        ctx = msg.ctx
        ctx.log.note("tree aborted: undoing this job's work (on_tree_aborted)")
        try:
            msg.job.on_tree_aborted(ctx)
            ctx.log.note("undo finished")
        except BaseException as exc:
            ctx.log.note("ERROR undo failed: "
                         + "".join(traceback.format_exception(exc)).rstrip())
        _tell(msg.reply_to, UndoDone(ctx.root, ctx.job_id))


def _tell(ref: pykka.ActorRef[Any], message: Any) -> None:
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.info("outcome %r dropped: its recipient had stopped (the job was fenced off, "
                 "or the node stopped)", message)
