"""Job states and the transitions allowed between them.

NEW      the job waits for its children (not all of them are SUCCESS yet).
WAITING  every child succeeded (or it has none): it is runnable and waits for a slot
         on its node (the node may be busy, or down).
RUNNING  its node claimed it and is running it.
SUCCESS / FAILED / ABORTED  finished; a finished job never changes state again.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    NEW = "NEW"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({State.SUCCESS, State.FAILED, State.ABORTED})

_ALLOWED: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.WAITING, State.ABORTED}),
    State.WAITING: frozenset({State.RUNNING, State.ABORTED}),
    State.RUNNING: frozenset({State.SUCCESS, State.FAILED, State.ABORTED}),
    State.SUCCESS: frozenset(),
    State.FAILED: frozenset(),
    State.ABORTED: frozenset(),
}


def can_transition(old: State, new: State) -> bool:
    """True when a job in state ``old`` may move to ``new``."""
    return new in _ALLOWED[old]
