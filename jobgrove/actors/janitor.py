"""The node's housekeeping, on an actor of its own so it never holds up jobs:

* **log files of deleted trees.** Whoever deletes a tree puts the ids of its jobs on
  each of its nodes' ``logs-gone`` list in Redis; the janitor removes those files and
  then the entries (so a node that was down, or crashed half-way, removes them once it
  runs again: the list waits in Redis).
* **retention.** Every ``interval`` it tries to take the cluster's retention lock (one
  node prunes at a time) and deletes the done trees whose root finished more than
  ``older_than`` seconds ago, in batches, pausing between them, renewing the lock.

Driven by ``Tick`` messages (a ``Ticker``); Redis trouble just waits for the next tick.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from typing import Any

import pykka

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.messages import Tick
from jobgrove.actors.stats import NodeStats
from jobgrove.actors.ticker import Ticker
from jobgrove.config import NodeConfig
from jobgrove.core.durations import format_duration
from jobgrove.errors import StoreUnavailableError
from jobgrove.jobs.log import log_path
from jobgrove.messaging.retention import Retention

log = logging.getLogger(__name__)

#: Seconds the retention lock is held without renewal (it is renewed every batch).
LOCK_TTL = 30.0
#: Seconds between looks at the node's list of log files to remove.
LOGS_EVERY = 1.0
#: Seconds of log-file removal per tick at most (the rest waits for the next tick).
LOGS_BUDGET = 0.5


def prune_interval(retention: float, interval: float | None = None) -> float:
    """How often nodes try to prune: ``interval``, else a tenth of the retention,
    between 1 s and 60 s."""
    return interval if interval else min(60.0, max(1.0, retention / 10))


class Janitor(Actor):
    def __init__(self, retention: Retention, name: str, log_dir: str, *, older_than: float,
                 interval: float, stats: NodeStats, halt: threading.Event,
                 pause: float = 0.002) -> None:
        super().__init__()
        self.retention = retention
        self.name = name
        self.log_dir = log_dir
        self.older_than = older_than
        self.interval = interval
        self.stats = stats
        self.halt = halt  # set when the node stops: a prune in progress ends early
        self.pause = pause
        self.next_logs = 0.0
        # Nodes started together need not all try at once.
        self.next_prune = time.monotonic() + interval * random.uniform(0.1, 1.0)

    @handles(Tick)
    def _on_tick(self, _message: Tick) -> None:
        now = time.monotonic()
        try:
            if now >= self.next_logs:
                self.next_logs = now + LOGS_EVERY
                self.remove_logs()
            if self.older_than > 0 and now >= self.next_prune:
                self.next_prune = now + self.interval
                self.prune()
        except StoreUnavailableError as exc:
            log.debug("janitor: Redis unavailable (%s); again later", exc)

    def remove_logs(self) -> int:
        """Remove the log files of deleted jobs listed for this node; how many."""
        removed = 0
        deadline = time.monotonic() + LOGS_BUDGET
        while not self.halt.is_set() and time.monotonic() < deadline:
            ids, entries = self.retention.gone_logs(self.name)
            for job_id in ids:
                try:
                    log_path(self.log_dir, job_id).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("cannot remove the log of deleted job %s: %s", job_id, exc)
            self.retention.ack_gone_logs(self.name, entries)
            if not entries:
                break
        if removed:
            self.stats.count("log_files_removed", removed)
            log.info("removed %d log file(s) of deleted trees", removed)
        return removed

    def prune(self) -> int:
        """One retention pass if no other node runs one; how many trees it deleted."""
        if not self.retention.lock(self.name, LOCK_TTL):
            return 0
        try:
            result = self.retention.prune(
                self.older_than, pause=self.pause,
                go_on=lambda: not self.halt.is_set()
                and self.retention.relock(self.name, LOCK_TTL))
        finally:
            self.retention.unlock(self.name)
        self.stats.count("prune_runs")
        if result.count:
            self.stats.count("pruned_trees", result.count)
            log.info("retention: deleted %d tree(s) finished more than %s ago",
                     result.count, format_duration(self.older_than))
        return result.count


class Housekeeping:
    """A node's ``Janitor`` and the ticker driving it (``start``/``stop``)."""

    def __init__(self, retention: Retention, name: str, log_dir: str, config: NodeConfig,
                 stats: NodeStats) -> None:
        self._args = (retention, name, log_dir)
        self._config = config
        self._stats = stats
        self._halt = threading.Event()
        self._actor: pykka.ActorRef[Any] | None = None
        self._ticker: Ticker | None = None

    def start(self) -> None:
        config = self._config
        self._actor = Janitor.start(
            *self._args, older_than=config.retention, stats=self._stats, halt=self._halt,
            interval=prune_interval(config.retention, config.retention_interval))
        self._ticker = Ticker(self._actor, 0.5, name=f"jobgrove-janitor-{self._args[1]}")
        self._ticker.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._halt.set()
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        if self._actor is not None:
            with contextlib.suppress(pykka.Timeout):
                self._actor.stop(block=True, timeout=timeout)
            self._actor = None
