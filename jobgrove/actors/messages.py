"""Every message an actor receives. Actors only ``tell`` these; none is ever asked.

The node side: ``NodeActor`` (slots, claims, outcomes), ``TreeSupervisor`` (one per
tree with jobs here), ``JobActor`` (runs one job at a time). The endpoint side:
``LogBroadcast`` (viewers' log subscriptions and tree watches).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol

import pykka

from jobgrove.jobs.api import Job, JobContext
from jobgrove.messaging.records import Claim, Finish, Holder

ActorRef = pykka.ActorRef[Any]


# -- shared ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tick:
    """Periodic wake-up (heartbeat, reconciliation, retries, abort fences, lingering
    feeds)."""


# -- node actor -----------------------------------------------------------------------
class HintKind(str, enum.Enum):
    """What a node's pub/sub hint says about one of its trees."""

    READY = "ready"  #: a job of the tree became runnable here
    ABORT = "abort"  #: the tree is aborting
    DONE = "done"  #: the tree is done


@dataclasses.dataclass(frozen=True)
class Hint:
    """A pub/sub message for this node: only a reason to re-read Redis."""

    kind: HintKind
    root: str


@dataclasses.dataclass(frozen=True)
class Reconnected:
    """The pub/sub listener (re)subscribed: facts may have been missed; re-read Redis."""


@dataclasses.dataclass(frozen=True)
class ListenerDown:
    """The pub/sub listener lost its connection."""

    error: str


@dataclasses.dataclass(frozen=True)
class Fill:
    """Node to itself: claim runnable jobs for free slots (coalesces many slot releases)."""


@dataclasses.dataclass(frozen=True)
class JobDone:
    """Job actor to node (success) or to supervisor (failure), supervisor to node: a
    job's code returned or raised."""

    root: str
    job_id: str
    token: str
    ok: bool
    summary: str
    result: Any = None
    #: The job's kind and how long its code ran (for the node's metrics).
    kind: str = ""
    seconds: float | None = None
    #: (log size, its end as text), stored with the outcome (``--log-keep-bytes``).
    log_tail: tuple[int, str] | None = None

    def finish(self, reporter: str, claim: bool, holder: Holder,
               run: tuple[str, int, int] | None = None) -> Finish:
        """What the store records for it (``reporter`` may claim the parent at once;
        ``run``: the (token, attempt, tree run) of its claim, when the node knows it)."""
        token, attempt, tree_run = run or (self.token, None, None)
        return Finish(self.root, self.job_id, token, self.ok, self.summary, self.result,
                      reporter, claim, holder, self.log_tail, attempt, tree_run)


@dataclasses.dataclass(frozen=True)
class Fence:
    """Supervisor to node: record a job that ignored its abort as ABORTED."""

    root: str
    job_id: str
    token: str
    summary: str
    kind: str = ""
    seconds: float | None = None
    log_tail: tuple[int, str] | None = None

    def finish(self, reporter: str, claim: bool, holder: Holder,
               run: tuple[str, int, int] | None = None) -> Finish:
        """What the store records for it: a failure, never claiming the parent."""
        token, attempt, tree_run = run or (self.token, None, None)
        return Finish(self.root, self.job_id, token, False, self.summary, None, reporter,
                      False, holder, self.log_tail, attempt, tree_run)


@dataclasses.dataclass(frozen=True)
class UndoDone:
    """Job actor to supervisor, supervisor to node: an undo hook returned."""

    root: str
    job_id: str


# -- tree supervisor --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StartJobs:
    """Node to supervisor: run these just-claimed jobs, each on its job actor."""

    claims: tuple[Claim, ...]
    runners: tuple[ActorRef, ...]


@dataclasses.dataclass(frozen=True)
class JobsEnded:
    """Node to supervisor: these jobs' successes reached the node (the supervisor stops
    tracking them; successes go from the job actor straight to the node)."""

    job_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AbortCheck:
    """Node to supervisor: abort the local jobs (the tree is aborting, or this process
    lost its node name)."""

    why: str = "the tree is aborting"


@dataclasses.dataclass(frozen=True)
class RunUndo:
    """Node to supervisor: run ``on_tree_aborted`` for these SUCCESS jobs of the tree."""

    job_ids: tuple[str, ...]
    runners: tuple[ActorRef, ...]


# -- job actor ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunJob:
    """Supervisor to job actor: run ``job`` (or its undo hook). A success is told to
    ``node`` directly (the common case, one hop); a failure goes to ``reply_to``, the
    supervisor, which stops the job's local siblings at once and forwards it."""

    reply_to: ActorRef
    node: ActorRef
    job: Job
    ctx: JobContext
    token: str
    undo: bool = False


# -- log broadcast (the node endpoint) ----------------------------------------------------
class Viewer(Protocol):
    """A websocket viewer as the log broadcast sees it (``endpoint.connection``)."""

    @property
    def id(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def push(self, frame: bytes, force: bool = False) -> bool: ...
    def room(self) -> int: ...


@dataclasses.dataclass(frozen=True)
class SubscribeLog:
    """A viewer wants a job's log from ``offset`` (``follow``: until the job ends)."""

    conn: Viewer
    job: str
    offset: int
    follow: bool
    root: str
    node: str
    state: str


@dataclasses.dataclass(frozen=True)
class UnsubscribeLog:
    conn: Viewer
    job: str


@dataclasses.dataclass(frozen=True)
class WatchTree:
    """A viewer watches a tree; ``status`` is the tree read just before."""

    conn: Viewer
    root: str
    status: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class UnwatchTree:
    conn: Viewer
    root: str


@dataclasses.dataclass(frozen=True)
class ViewerClosed:
    """The viewer is gone: drop everything it had."""

    conn: Viewer


@dataclasses.dataclass(frozen=True)
class ViewerDrained:
    """The viewer's send queue has room again."""

    conn: Viewer


@dataclasses.dataclass(frozen=True)
class TreeEvent:
    """A pub/sub event of a watched tree (status, abort or done)."""

    root: str
    event: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TreeSnapshot:
    """A fresh read of a watched tree (once its channel is live after a watch, or after
    a resync)."""

    root: str
    status: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class JobStates:
    """States of followed jobs, read for the broadcast (job id -> state)."""

    states: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Resync:
    """The endpoint's pub/sub listener (re)subscribed: tree events may have been missed."""


@dataclasses.dataclass(frozen=True)
class LogGrew:
    """A local job's log grew (its size is in the ``GrowthGate``)."""

    job: str


class RelayKind(str, enum.Enum):
    """What the relay's upstream connection reports."""

    GREW = "grew"  #: the spool holds bytes up to ``end``
    LIVE = "live"  #: caught up with the owning node
    END = "end"  #: the job ended (``state``) and its log is ``end`` bytes long
    UP = "up"  #: connected
    DOWN = "down"  #: the connection failed; it retries (``error``)
    FATAL = "fatal"  #: the rest of the log cannot be fetched (``error``)
    #: The owning node cannot be reached, but the job ended and its node stored the
    #: log's end in Redis: ``path`` holds it, from byte ``base`` to ``end``; ``error``
    #: says where it comes from.
    STORED = "stored"


@dataclasses.dataclass(frozen=True)
class Relay:
    """From a relay upstream (``gen`` tells a stale upstream from the current one)."""

    job: str
    gen: int
    kind: RelayKind
    end: int = 0
    state: str = ""
    error: str = ""
    base: int = 0
    path: str = ""
