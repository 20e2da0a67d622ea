"""What a node counts about itself for ``GET /metrics``: plain numbers kept by its
actors (the node actor, the janitor) and read by the endpoint at scrape time, which
turns them into Prometheus text (``endpoint/metrics.py``). Writers and readers are on
different threads: every change and every read takes the lock."""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Iterable
from typing import Any

from jobgrove.messaging.records import Outcome, Verdict

#: Upper bounds (seconds) of the job duration histogram's buckets.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           300.0, 900.0, 3600.0)


@dataclasses.dataclass
class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), sum and count."""

    counts: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def copy(self) -> Histogram:
        return Histogram(list(self.counts), self.total)


@dataclasses.dataclass
class Snapshot:
    """A consistent copy of a node's numbers."""

    concurrency: int
    running: int
    outbox: int
    redis_up: bool
    finished: dict[tuple[str, str], int]  # (state, kind) -> jobs
    durations: dict[str, Histogram]  # kind -> run time of its jobs
    refused: dict[str, int]  # verdict -> outcomes Redis did not apply
    claims: int
    reconciliations: int
    redis_outages: int
    pruned_trees: int
    prune_runs: int
    last_prune: float  # unix time of the last prune this node ran (0: never)
    log_files_removed: int
    started: float  # unix time the node started


class NodeStats:
    """A node's counters and gauges."""

    def __init__(self, concurrency: int) -> None:
        self._lock = threading.Lock()
        self._concurrency = concurrency
        self._running = 0
        self._outbox = 0
        self._redis_up = True
        self._finished: dict[tuple[str, str], int] = {}
        self._durations: dict[str, Histogram] = {}
        self._refused: dict[str, int] = {}
        self._counts = {"claims": 0, "reconciliations": 0, "redis_outages": 0,
                        "pruned_trees": 0, "prune_runs": 0, "log_files_removed": 0}
        self._last_prune = 0.0
        self._started = time.time()

    # -- the node actor ------------------------------------------------------------------
    def recorded(self, messages: Iterable[Any], outcomes: Iterable[Outcome]) -> None:
        """Outcomes of jobs run here were sent to Redis: ``messages`` (``JobDone`` or
        ``Fence``, with ``kind`` and ``seconds``) and what Redis made of each."""
        with self._lock:
            for message, outcome in zip(messages, outcomes):
                if outcome.verdict is not Verdict.OK:
                    key = str(outcome.verdict)
                    self._refused[key] = self._refused.get(key, 0) + 1
                    continue
                kind = str(getattr(message, "kind", "") or "unknown")
                state = (str(outcome.state), kind)
                self._finished[state] = self._finished.get(state, 0) + 1
                seconds = getattr(message, "seconds", None)
                if seconds is not None:
                    self._durations.setdefault(kind, Histogram()).observe(float(seconds))

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to a counter: claims, reconciliations, redis_outages, pruned_trees,
        prune_runs, log_files_removed."""
        with self._lock:
            self._counts[what] += n
            if what == "prune_runs":
                self._last_prune = time.time()

    def sample(self, running: int, outbox: int, redis_up: bool) -> None:
        with self._lock:
            self._running, self._outbox, self._redis_up = running, outbox, redis_up

    # -- the endpoint ----------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            c = self._counts
            return Snapshot(
                self._concurrency, self._running, self._outbox, self._redis_up,
                dict(self._finished), {k: h.copy() for k, h in self._durations.items()},
                dict(self._refused), c["claims"], c["reconciliations"], c["redis_outages"],
                c["pruned_trees"], c["prune_runs"], self._last_prune,
                c["log_files_removed"], self._started)
