"""The public Node: a jobgrove node running inside the host process."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pykka

from jobgrove import __version__
from jobgrove.actors.messages import Hint, HintKind, ListenerDown, Reconnected
from jobgrove.actors.node_actor import NodeActor
from jobgrove.actors.ticker import Ticker
from jobgrove.actors.upkeep import Notifier, Upkeep
from jobgrove.core.ids import is_job_id
from jobgrove.core.spec import MAX_NAME, check_node_name
from jobgrove.errors import JobgroveError, StoreUnavailableError
from jobgrove.jobs.api import kind_class, kind_names
from jobgrove.jobs.builtin import SHELL_GRACE
from jobgrove.jobs.log import GrowthListener
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.pubsub import Listener
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store
from jobgrove.notify import CommandNotifier

log = logging.getLogger(__name__)

#: How long a stopping node waits for its actors (seconds).
_STOP_TIMEOUT = 10.0


def default_log_dir(name: str) -> str:
    base = os.environ.get("JOBGROVE_LOG_DIR")
    if base:
        return str(Path(base) / name)
    return str(Path.home() / ".local" / "state" / "jobgrove" / name / "logs")


class Node:
    """Runs the jobs assigned to ``name``. ``start()`` returns once the node is up.

    ``redis``: a URL, a redis-py client (fakeredis too), or None for the default URL.
    """

    def __init__(self, name: str, *, redis: Any = None, log_dir: str | None = None,
                 concurrency: int = 8, abort_grace: float = 10.0, lease: float = 10.0,
                 heartbeat: float | None = None, reconcile_interval: float = 5.0,
                 tick: float = 0.05, namespace: str = "jg", address: str | None = None,
                 notifier: Notifier | None = None,
                 on_log_growth: GrowthListener | None = None, listen: str | None = None,
                 advertise: str | None = None, secret: bytes | None = None,
                 allowed_origins: tuple[str, ...] = ()) -> None:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME \
                or not name.isprintable() or check_node_name(name):
            raise JobgroveError(f"invalid node name {name!r}: 1 to {MAX_NAME} printable "
                                "characters, no spaces, '/', '{' or '}'")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise JobgroveError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.name = name
        client = connect(redis) if redis is None or isinstance(redis, str) else decoded(redis)
        self.keys = Keys(namespace)
        self.store = Store(client, self.keys)
        self.registry = Registry(client, self.keys)
        self.log_dir = log_dir or default_log_dir(name)
        self.concurrency = concurrency
        self.abort_grace = abort_grace
        self.lease = lease
        self.heartbeat = heartbeat or max(lease / 4, 0.05)
        self.reconcile_interval = reconcile_interval
        self.tick = tick
        self.address = address
        self.notifier = notifier if notifier is not None else CommandNotifier()
        self.on_log_growth = on_log_growth
        self.listen = listen
        self.advertise = advertise
        self.secret = secret
        self.allowed_origins = allowed_origins
        self.endpoint: Any = None
        self.token = uuid.uuid4().hex
        self.actor: pykka.ActorRef[Any] | None = None
        self._listener: Listener | None = None
        self._ticker: Ticker | None = None
        self._lock = threading.Lock()

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "version": __version__,
                "concurrency": self.concurrency, "started": time.time(),
                "pid": os.getpid(), "host": socket.gethostname(), "kinds": kind_names(),
                # Lets a restart on this host take over the lease of a crashed process
                # (compare-and-set); anyone who can read Redis can write it anyway.
                "lease_token": self.token}

    def start(self) -> Node:
        """Register (refusing a name held by a live process), fail what a previous
        process of this name left RUNNING, then start the actors. Raises
        StoreUnavailableError if Redis cannot be reached."""
        with self._lock:
            if self.actor is not None:
                return self
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            if self.listen is not None:
                self._start_endpoint()
            record = self.record()
            try:
                self.registry.claim_name(self.name, self.token, int(self.lease * 1000), record,
                                         holder_is_dead=_crashed_here)
            except JobgroveError:
                if self.endpoint is not None:
                    self.endpoint.stop()
                    self.endpoint = None
                raise
            try:
                undo_kinds = {k for k in kind_names() if (cls := kind_class(k)) and cls.has_undo()}
                upkeep = Upkeep(self.store, self.registry, self.name, self.token, record,
                                lease=self.lease, heartbeat=self.heartbeat,
                                reconcile_interval=self.reconcile_interval,
                                undo_kinds=undo_kinds, notifier=self.notifier)
                reaped = upkeep.reap_own()
                if reaped:
                    log.warning("failed %d job(s) left RUNNING by a previous process of node %s",
                                len(reaped), self.name)
                self.actor = NodeActor.start(
                    self.store, self.name, concurrency=self.concurrency, log_dir=self.log_dir,
                    abort_grace=self.abort_grace, upkeep=upkeep, on_log_growth=self.on_log_growth)
                actor = self.actor
                self._listener = Listener(
                    self.store, [self.keys.node_channel(self.name)],
                    on_message=lambda _ch, msg: _route(actor, msg),
                    on_up=lambda: actor.tell(Reconnected()),
                    on_down=lambda err: actor.tell(ListenerDown(err)),
                    name=f"jobgrove-pubsub-{self.name}")
                self._listener.start()
                self._ticker = Ticker(actor, self.tick, name=f"jobgrove-ticker-{self.name}")
                self._ticker.start()
            except BaseException:
                # Leave nothing behind: no lease held, no endpoint listening, no threads.
                self._abandon_start()
                raise
            atexit.register(self._stop_at_exit)
            log.info("node %s started (concurrency %d, logs in %s)", self.name,
                     self.concurrency, self.log_dir)
            return self

    def _abandon_start(self) -> None:
        for part in (self._ticker, self._listener):
            if part is not None:
                part.stop()
        self._ticker = self._listener = None
        if self.actor is not None:
            self.actor.stop(block=False)
            self.actor = None
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        try:
            self.registry.release(self.name, self.token)
        except StoreUnavailableError:
            log.warning("node %s: could not release its lease (it expires by itself)",
                        self.name)

    def _stop_at_exit(self) -> None:
        if self.actor is not None:
            log.warning("node %s was not stopped by its host; stopping it at exit", self.name)
            self.stop(graceful=False)

    def _start_endpoint(self) -> None:
        from jobgrove.endpoint.app import Endpoint

        assert self.listen is not None
        self.endpoint = Endpoint(node_name=self.name, store=self.store, registry=self.registry,
                                 log_dir=self.log_dir, listen=self.listen, secret=self.secret,
                                 allowed_origins=self.allowed_origins,
                                 running_count=self._running_or_none)
        self.endpoint.start()
        self.address = self.advertise or self.endpoint.address
        downstream = self.on_log_growth
        endpoint = self.endpoint

        def growth(job_id: str, size: int) -> None:
            endpoint.on_log_growth(job_id, size)
            if downstream is not None:
                downstream(job_id, size)

        self.on_log_growth = growth

    def _running_or_none(self) -> int | None:
        try:
            return self.running(timeout=1.0)
        except (pykka.Timeout, pykka.ActorDeadError):
            return None

    def running(self, timeout: float = 5.0) -> int:
        """How many jobs run here now."""
        if self.actor is None:
            return 0
        return int(self.actor.proxy().running_count.get(timeout=timeout))

    def drain(self) -> None:
        """Start nothing new; running jobs go on and get recorded."""
        if self.actor is not None:
            self.actor.proxy().drain().get(timeout=_STOP_TIMEOUT)

    def idle(self) -> bool:
        """True when nothing runs here and every outcome is recorded."""
        if self.actor is None:
            return True
        proxy = self.actor.proxy()
        return proxy.running_count.get(timeout=_STOP_TIMEOUT) == 0 \
            and proxy.pending_outcomes.get(timeout=_STOP_TIMEOUT) == 0

    def wait_idle(self, timeout: float, interrupt: threading.Event | None = None) -> bool:
        """Wait until ``idle()`` (True), the timeout, or ``interrupt`` is set (False)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() >= deadline or (interrupt is not None and interrupt.is_set()):
                return False
            (interrupt or threading.Event()).wait(0.05)
        return True

    def stop(self, graceful: bool = True, timeout: float = 60.0) -> None:
        """Stop the node. Graceful: start nothing new, let running jobs finish (up to
        ``timeout``) and record them. Otherwise, or past the timeout: abort what runs,
        record it FAILED ("node stopped") and stop at once."""
        if graceful and self.actor is not None:
            try:
                self.drain()
                self.wait_idle(timeout)
            except (pykka.Timeout, pykka.ActorDeadError) as exc:
                log.warning("node %s did not drain cleanly: %s", self.name, exc)
        with self._lock:
            actor, self.actor = self.actor, None
            if actor is None:
                return
            if self._ticker is not None:
                self._ticker.stop()
            if self._listener is not None:
                self._listener.stop()
            try:
                runners = actor.proxy().all_runners().get(timeout=_STOP_TIMEOUT)
                actor.stop(block=True, timeout=_STOP_TIMEOUT)
            except (pykka.Timeout, pykka.ActorDeadError):
                runners = []
                log.warning("node actor of %s did not stop within %ss", self.name,
                            _STOP_TIMEOUT)
            # Running jobs were asked to abort: give them their grace (a shell job's
            # process group gets SIGTERM, then SIGKILL) so none outlives the node.
            deadline = time.monotonic() + max(self.abort_grace, SHELL_GRACE + 2.0)
            for runner in runners:
                if not runner.actor_stopped.wait(max(0.0, deadline - time.monotonic())):
                    log.warning("node %s: a job did not stop within its grace; it is "
                                "recorded FAILED and left to the process exit", self.name)
                    break
            try:
                for root in self.store.node_trees(self.name):
                    self.store.reap(root, self.name, f"node {self.name} stopped")
                self.registry.release(self.name, self.token)
            except StoreUnavailableError as exc:
                log.error("node %s stopped without reaching Redis: %s", self.name, exc)
            if self.endpoint is not None:
                self.endpoint.stop()
                self.endpoint = None
            atexit.unregister(self._stop_at_exit)
            log.info("node %s stopped", self.name)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _crashed_here(holder: dict[str, Any]) -> bool:
    """True if the lease holder was a process on this host that no longer exists."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # another Node of this very process: a real conflict
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


_HINTS = {kind.value: kind for kind in HintKind}


def _route(actor: pykka.ActorRef[Any], message: dict[str, Any]) -> None:
    kind, root = _HINTS.get(str(message.get("t"))), message.get("root")
    if kind is not None and is_job_id(root):
        actor.tell(Hint(kind, root))
    else:
        log.warning("ignored unexpected node message: %.200r", message)
