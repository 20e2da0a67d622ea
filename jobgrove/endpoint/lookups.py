"""The endpoint's Redis reads, on a thread of their own: the log-broadcast actor never
touches Redis (an outage must not stall log delivery), so it asks here and is told the
answers. The same thread pings Redis and ticks the actor once a second."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from jobgrove.actors.messages import JobStates, Tick, TreeSnapshot
from jobgrove.errors import StoreUnavailableError, UnknownJobError
from jobgrove.messaging.store import Store

#: ``states``: the states of a list of jobs; ``snapshot``: one tree's whole status.
Lookup = Literal["states", "snapshot"]

log = logging.getLogger(__name__)


class Lookups(threading.Thread):
    """Redis reads on behalf of the actor, a health ping and the actor's tick (1 s)."""

    def __init__(self, store: Store, tell: Callable[[Any], None],
                 redis_state: Callable[[bool], None], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.store = store
        self._tell = tell
        self._redis_state = redis_state
        self._cond = threading.Condition()
        self._queue: deque[tuple[Lookup, Any]] = deque()
        self._halt = False

    def request(self, what: Lookup, arg: Any) -> None:
        with self._cond:
            self._queue.append((what, arg))
            self._cond.notify()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._halt = True
            self._cond.notify()
        self.join(timeout)

    def run(self) -> None:
        next_tick = time.monotonic()
        while True:
            with self._cond:
                while not self._halt and not self._queue and time.monotonic() < next_tick:
                    self._cond.wait(next_tick - time.monotonic())
                if self._halt:
                    return
                item = self._queue.popleft() if self._queue else None
            try:
                if item is None:
                    next_tick = time.monotonic() + 1.0
                    self._tick()
                else:
                    self._do(*item)
            except StoreUnavailableError:
                self._redis_state(False)
            except Exception:  # the lookup thread must survive a bad record
                log.exception("endpoint lookup %s failed", item and item[0])

    def _tick(self) -> None:
        try:
            self._redis_state(self.store.ping())
        except Exception:
            self._redis_state(False)
        self._tell(Tick())

    def _do(self, what: Lookup, arg: Any) -> None:
        if what == "states":
            states: dict[str, str] = {}
            for job in arg:
                with contextlib.suppress(UnknownJobError):
                    states[job] = self.store.job_state(job)
            self._tell(JobStates(states))
        else:
            with contextlib.suppress(UnknownJobError):
                self._tell(TreeSnapshot(arg, self.store.tree_status(arg)))
