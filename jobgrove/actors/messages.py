"""Messages between actors. Actors only ``tell`` these; none of them is ever asked."""

from __future__ import annotations

import dataclasses
from typing import Any

from jobgrove.messaging.records import Claim


@dataclasses.dataclass(frozen=True)
class Tick:
    """Periodic wake-up (heartbeat, reconciliation, retries, abort fences)."""


@dataclasses.dataclass(frozen=True)
class Hint:
    """A pub/sub message for this node: ``kind`` is ready, abort or done."""

    kind: str
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
class StartJobs:
    """Node to supervisor: run these just-claimed jobs, each on its job actor."""

    claims: tuple[Claim, ...]
    runners: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class JobDone:
    """Job actor to supervisor, supervisor to node: a job's code returned or raised."""

    root: str
    job_id: str
    token: str
    ok: bool
    summary: str
    result: Any = None


@dataclasses.dataclass(frozen=True)
class AbortCheck:
    """Node to supervisor: the tree is aborting; abort the flagged local jobs."""


@dataclasses.dataclass(frozen=True)
class Fence:
    """Supervisor to node: record a job that ignored its abort as ABORTED."""

    root: str
    job_id: str
    token: str
    summary: str


@dataclasses.dataclass(frozen=True)
class RunUndo:
    """Node to supervisor: run ``on_tree_aborted`` for these SUCCESS jobs of the tree."""

    job_ids: tuple[str, ...]
    runners: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class UndoDone:
    root: str
    job_id: str
