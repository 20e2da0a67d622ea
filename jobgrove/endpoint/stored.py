"""What the relay does when the node that has a job's log cannot be reached: serve the
end of the log that node stored in Redis when the job ended, or say why nothing can be
served, or try again later. Decided on the relay's own thread (it reads Redis)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from jobgrove.core.states import FINISHED, State
from jobgrove.errors import UnknownJobError
from jobgrove.messaging.logtails import StoredLog, read_stored
from jobgrove.messaging.reads import StoreReads
from jobgrove.messaging.registry import Registry


@dataclasses.dataclass(frozen=True)
class Fallback:
    """``stored``: serve ``log`` (then the job's ``state``); ``empty``: the job never
    ran, so its log is empty; ``fatal``: nothing can be served (``message`` says why);
    ``retry``: the node may answer later (``message`` may add why not now)."""

    kind: Literal["stored", "empty", "fatal", "retry"]
    message: str = ""
    state: str = ""
    log: StoredLog | None = None


def fallback(store: StoreReads, registry: Registry, node: str, job: str) -> Fallback:
    """What to serve instead of the log of ``job`` on ``node``, which cannot be reached."""
    try:
        status = store.job_status(job)
    except UnknownJobError:
        return Fallback("fatal", f"job {job} no longer exists (its tree was deleted)")
    state = str(status["state"])
    alive = registry.lease_held(node)
    where = (f"node {node} cannot be reached" if alive
             else f"node {node} is gone (no live process holds its name)")
    if state in FINISHED:
        stored = read_stored(store, str(status["root"]), job)
        if stored is not None:
            return Fallback("stored", f"{where}: this is the end of the log of job {job} it "
                            "stored in Redis when the job ended", state, stored)
        if status["started"] is None:
            return Fallback("empty", state=state)  # it never ran: there is no log
        if not alive:
            summary = str(status.get("summary") or "")
            if summary.startswith(f"node {node} "):
                return Fallback("fatal", f"node {node} was lost or stopped while job {job} "
                                f"was running ({summary}): its log stayed on that node and "
                                "no copy of it was stored (a node stores one when a job ends)")
            return Fallback("fatal", f"{where} and stored no copy of the log of job {job} "
                            "(was it started with --log-keep-bytes 0?)")
    elif not alive and state == State.RUNNING:
        return Fallback("retry", f"(job {job} is RUNNING on node {node}, which is gone: it "
                        "ends FAILED once a live node reaps it, and no copy of its log is "
                        "stored)")
    elif state == State.RUNNING:
        return Fallback("retry", f"(job {job} is RUNNING there; a copy of the end of its "
                        "log is stored in Redis when it ends)")
    return Fallback("retry")
