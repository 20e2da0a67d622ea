"""Status objects: the contract's JSON shape of a job, nested by children, and the one
walk over such a tree that every reader (CLI, renderer, demo, log broadcast) uses.

Walks are iterative: trees can be 256 levels deep and 200,000 jobs wide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from jobgrove.core.states import FINISHED, State

Status = dict[str, Any]
_FINISHED_NAMES = frozenset(s.value for s in FINISHED)


def nest_status(flat: Mapping[str, dict[str, Any]], root: str) -> Status:
    """Nest flat status objects into a tree, starting at ``root``.

    Each flat object carries ``child_ids`` (the order of the spec); the result
    has ``children`` lists instead.
    """
    out: dict[str, dict[str, Any]] = {}
    for job_id, record in flat.items():
        item = {k: v for k, v in record.items() if k != "child_ids"}
        item["children"] = []
        out[job_id] = item
    stack = [root]
    while stack:
        job_id = stack.pop()
        for child in flat[job_id].get("child_ids", ()):
            if child in out:
                out[job_id]["children"].append(out[child])
                stack.append(child)
    return out[root]


def walk(status: Status) -> Iterator[Status]:
    """Every job of a nested status, the root first (depth first)."""
    stack = [status]
    while stack:
        job = stack.pop()
        yield job
        stack.extend(reversed(job.get("children", ())))


def find(status: Status, job_id: str) -> Status | None:
    """The job ``job_id`` inside a nested status, or None."""
    return next((job for job in walk(status) if job["id"] == job_id), None)


def states(status: Status) -> dict[str, str]:
    """Every job's state by id."""
    return {job["id"]: job["state"] for job in walk(status)}


def counts(status: Status) -> dict[str, int]:
    """How many jobs are in each state."""
    out: dict[str, int] = {}
    for job in walk(status):
        out[job["state"]] = out.get(job["state"], 0) + 1
    return out


def is_done(status: Status) -> bool:
    """Root finished and nothing left running (what ``Client.wait`` waits for)."""
    if status["state"] not in _FINISHED_NAMES:
        return False
    return all(job["state"] != State.RUNNING.value for job in walk(status))


#: Every state, in the order counts are shown.
STATE_ORDER = tuple(s.value for s in State)


def tally(states: Iterable[str]) -> dict[str, int]:
    """``{"total": N, "NEW": k, ...}``: how many jobs are in each state (all six states,
    zeros included, so scripts can read any of them)."""
    out = dict.fromkeys(("total", *STATE_ORDER), 0)
    for state in states:
        out["total"] += 1
        out[state] = out.get(state, 0) + 1
    return out


def tree_state(root_state: str, counts: Mapping[str, int]) -> str:
    """The state of a whole tree, derived from all of its jobs (``counts`` as ``tally``
    gives them): ``RUNNING`` while any job runs; else, once the root is finished, the
    root's state (the tree's outcome); else ``WAITING`` when some job is runnable (it
    waits for a slot, or for its node), else the root's state (``NEW``)."""
    if counts.get(State.RUNNING.value, 0):
        return State.RUNNING.value
    if root_state in _FINISHED_NAMES:
        return root_state
    if counts.get(State.WAITING.value, 0):
        return State.WAITING.value
    return root_state


#: How a node that is not up is described: missing from the registry, stopped cleanly,
#: or lost (its lease expired without a clean stop).
NODE_UNKNOWN = "not registered"


def waiting_notes(jobs: Iterable[Status], node_states: Mapping[str, str]) -> dict[str, str]:
    """For each ``WAITING`` job whose node is not up, why it does not start: ``waiting
    for node X (not registered)``, ``(stopped)`` or ``(lost)``. ``node_states`` maps
    registered node names to ``up``, ``stopped`` or ``lost``."""
    notes: dict[str, str] = {}
    for job in jobs:
        if job.get("state") != State.WAITING.value:
            continue
        node = job.get("node")
        condition = node_states.get(str(node), NODE_UNKNOWN)
        if condition != "up":
            notes[str(job["id"])] = f"waiting for node {node} ({condition})"
    return notes
