"""The node actor's bookkeeping, as plain classes (no Redis, no threads of their own):
which slots are taken and by what (``Slots``), the idle job actors (``RunnerPool``),
and the outcomes waiting to be recorded (``Outbox``).

Each is owned by the node actor and used only from its thread.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

R = TypeVar("R")  # a job actor's reference (any object in unit tests)
M = TypeVar("M")  # an outcome message

UNDO = "undo:"


def undo_key(job_id: str) -> str:
    """The slot key of a job's undo hook (a job and its undo never share a key)."""
    return f"{UNDO}{job_id}"


@dataclasses.dataclass(frozen=True)
class Slot(Generic[R]):
    root: str
    runner: R


class Slots(Generic[R]):
    """What holds each of the node's concurrency slots: a running job (keyed by its id)
    or an undo hook (``undo_key``), with its tree and its job actor."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._held: dict[str, Slot[R]] = {}
        self._per_root: dict[str, int] = {}

    def occupy(self, key: str, root: str, runner: R) -> None:
        if key in self._held:
            raise ValueError(f"slot {key} is taken already")
        self._held[key] = Slot(root, runner)
        self._per_root[root] = self._per_root.get(root, 0) + 1

    def release(self, key: str) -> Slot[R] | None:
        """Free ``key``'s slot; None if it held none (a late or duplicate report)."""
        slot = self._held.pop(key, None)
        if slot is not None:
            left = self._per_root[slot.root] - 1
            if left:
                self._per_root[slot.root] = left
            else:
                del self._per_root[slot.root]
        return slot

    def __contains__(self, key: str) -> bool:
        return key in self._held

    @property
    def used(self) -> int:
        return len(self._held)

    @property
    def free(self) -> int:
        return max(0, self.concurrency - len(self._held))

    def busy(self, root: str) -> bool:
        """Whether anything of ``root`` holds a slot here."""
        return root in self._per_root

    def job_ids(self) -> list[str]:
        """The running jobs (undo hooks left out)."""
        return [key for key in self._held if not key.startswith(UNDO)]

    def runners(self) -> list[R]:
        return [slot.runner for slot in self._held.values()]


class Supervisors(Generic[R]):
    """The tree supervisors of this node by root. One whose tree has nothing running
    here is kept ``idle_for`` seconds: in a chain the parent usually starts next."""

    def __init__(self, start: Callable[[str], R], stop: Callable[[R], None],
                 idle_for: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._stop = stop
        self.idle_for = idle_for
        self._clock = clock
        self._refs: dict[str, R] = {}
        self._idle_since: dict[str, float] = {}

    def get(self, root: str) -> R | None:
        return self._refs.get(root)

    def ensure(self, root: str) -> R:
        """The supervisor of ``root``, started if there is none."""
        self._idle_since.pop(root, None)
        ref = self._refs.get(root)
        if ref is None:
            ref = self._refs[root] = self._start(root)
        return ref

    def idle(self, root: str) -> None:
        self._idle_since[root] = self._clock()

    def stop_idle(self, busy: Callable[[str], bool]) -> None:
        now = self._clock()
        for root, since in list(self._idle_since.items()):
            if now - since >= self.idle_for and not busy(root):
                del self._idle_since[root]
                ref = self._refs.pop(root, None)
                if ref is not None:
                    self._stop(ref)

    def all(self) -> list[R]:
        return list(self._refs.values())

    def stop_all(self) -> None:
        for ref in self._refs.values():
            self._stop(ref)
        self._refs.clear()
        self._idle_since.clear()


class RunnerPool(Generic[R]):
    """Idle job actors, reused for the next job; at most ``size`` kept idle."""

    def __init__(self, size: int, start: Callable[[], R], stop: Callable[[R], None]) -> None:
        self.size = size
        self._start = start
        self._stop = stop
        self._idle: list[R] = []

    def take(self) -> R:
        return self._idle.pop() if self._idle else self._start()

    def give_back(self, runner: R, retire: bool = False) -> None:
        """``retire``: its job ignored an abort and may still run, so it is never
        reused (its stop is queued behind that job: the thread ends once the code
        returns). Past ``size`` idle ones (after a burst of undo hooks) it stops too."""
        if retire or len(self._idle) >= self.size:
            self._stop(runner)
        else:
            self._idle.append(runner)

    def idle(self) -> list[R]:
        return list(self._idle)

    def stop_all(self) -> None:
        for runner in self._idle:
            self._stop(runner)
        self._idle.clear()


class Alarms:
    """Trees to look at again at a given time (when a retry delay ends)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, str]] = []

    def set(self, seconds: float, root: str) -> None:
        heapq.heappush(self._heap, (self._clock() + seconds, root))

    def due(self) -> list[str]:
        now, out = self._clock(), []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[1])
        return out


class TreeErrors:
    """Errors met while working on single trees, logged once each: one tree's bad record
    must neither stop the node's work on the others nor flood the log every tick."""

    def __init__(self, log: Callable[[str, str, str], None]) -> None:
        self._log = log
        self._seen: dict[tuple[str, str], str] = {}

    def failed(self, root: str, what: str, error: str) -> None:
        if self._seen.get((root, what)) != error:
            self._seen[(root, what)] = error
            self._log(root, what, error)

    def forget(self, root: str) -> None:
        self._seen = {k: v for k, v in self._seen.items() if k[0] != root}


class Outbox(Generic[M]):
    """Outcomes waiting to be recorded, in arrival order. A batch taken out is put back
    in front if Redis could not take it (replaying is safe: the run token makes a
    second finish a no-op). Jobs whose outcome Redis refused for good are remembered as
    given up, so reconciliation never runs them again."""

    def __init__(self, job_id: Callable[[M], str]) -> None:
        self._job_id = job_id
        self._items: list[M] = []
        self._given_up: dict[str, str] = {}  # job id -> its root

    def add(self, item: M) -> None:
        self._items.append(item)

    def take(self) -> list[M]:
        batch, self._items = self._items, []
        return batch

    def put_back(self, batch: Iterable[M]) -> None:
        self._items = [*batch, *self._items]

    def give_up(self, job_id: str, root: str) -> None:
        self._given_up[job_id] = root

    def forget_tree(self, root: str) -> None:
        """The tree is done and forgotten here: its given-up jobs need no memory."""
        self._given_up = {j: r for j, r in self._given_up.items() if r != root}

    def job_ids(self) -> set[str]:
        """Jobs with an outcome waiting or given up on (both known to this node)."""
        return {self._job_id(item) for item in self._items} | set(self._given_up)

    def __len__(self) -> int:
        return len(self._items)
