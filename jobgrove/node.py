"""The public Node: a jobgrove node running inside the host process."""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from jobgrove._version import __version__
from jobgrove.actors.janitor import Housekeeping
from jobgrove.actors.lease import Lease
from jobgrove.actors.messages import Hint, HintKind, ListenerDown, Reconnected
from jobgrove.actors.node_actor import NodeActor
from jobgrove.actors.stats import NodeStats
from jobgrove.actors.ticker import Ticker
from jobgrove.actors.upkeep import Notifier, Upkeep
from jobgrove.config import NodeConfig, node_name
from jobgrove.core.ids import is_job_id
from jobgrove.core.spec import MAX_NAME
from jobgrove.endpoint.app import Endpoint
from jobgrove.endpoint.auth import load_secret
from jobgrove.errors import ConfigError, JobgroveError, StoreUnavailableError
from jobgrove.jobs import output, reaper
from jobgrove.jobs.api import kind_class, kind_names
from jobgrove.jobs.builtin import SHELL_GRACE
from jobgrove.jobs.log import GrowthListener
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.pubsub import Listener
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.retention import Retention
from jobgrove.messaging.store import Store
from jobgrove.notify import CommandNotifier

log = logging.getLogger(__name__)

#: How long a stopping node waits for its actors (seconds).
_STOP_TIMEOUT = 10.0


class Node:
    """Runs the jobs assigned to ``name``. ``start()`` returns once the node is up.

    ``redis``: a URL, a redis-py client (fakeredis too), or None for the default URL.
    Settings come from ``config`` (a ``NodeConfig``), with any of its fields given as
    keywords on top (``Node("n1", concurrency=4)``). ``secret`` (bytes) stands for
    ``secret_file``'s content when embedding; ``notifier`` is called on Redis outages
    and recoveries (default: log them, and run ``notify_command`` if set);
    ``on_log_growth(job_id, size)`` is called as job logs grow; ``address`` is what
    the registry shows when there is no endpoint of our own.
    """

    def __init__(self, name: str, *, redis: Any = None, config: NodeConfig | None = None,
                 secret: bytes | None = None, notifier: Notifier | None = None,
                 on_log_growth: GrowthListener | None = None, address: str | None = None,
                 **settings: Any) -> None:
        try:
            node_name(name if isinstance(name, str) else "")
        except ValueError:
            raise ConfigError(f"invalid node name {name!r}: 1 to {MAX_NAME} printable "
                              "characters, no spaces, '/', '{' or '}'") from None
        unknown = set(settings) - {f.name for f in dataclasses.fields(NodeConfig)}
        if unknown:
            raise ConfigError(f"unknown node setting(s): {', '.join(sorted(unknown))}")
        self.name = name
        self.config = dataclasses.replace(config or NodeConfig(), **settings)
        client = connect(redis) if redis is None or isinstance(redis, str) else decoded(redis)
        self.keys = Keys(self.config.namespace)
        self.store = Store(client, self.keys, min_replicas_ack=self.config.min_replicas_ack,
                           ack_timeout=self.config.ack_timeout)
        self.registry = Registry(client, self.keys)
        self.log_dir = self.config.resolved_log_dir(name)
        self.concurrency = self.config.concurrency
        self.address = address
        self.secret = secret
        self.notifier = notifier
        self.on_log_growth = on_log_growth
        self.endpoint: Endpoint | None = None
        self.lease = Lease(self.registry, name, self.config.lease)
        #: What GET /metrics reports (counted by the actors).
        self.stats = NodeStats(self.concurrency)
        self.actor: pykka.ActorRef[Any] | None = None
        self._housekeeping = Housekeeping(Retention(self.store), name, self.log_dir,
                                          self.config, self.stats)
        self._listener: Listener | None = None
        self._ticker: Ticker | None = None
        self._lock = threading.Lock()

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "version": __version__,
                "concurrency": self.concurrency, "started": time.time(),
                "pid": os.getpid(), "host": socket.gethostname(), "kinds": kind_names()}

    def start(self) -> Node:
        """Register (refusing a name held by a live process), fail what a previous
        process of this name left RUNNING, then start the actors. Raises
        StoreUnavailableError if Redis cannot be reached."""
        config = self.config
        with self._lock:
            if self.actor is not None:
                return self
            _import_kinds(config.imports)
            output.install()
            if self.secret is None and config.secret_file is not None:
                self.secret = load_secret(config.secret_file)
            if self.notifier is None:
                self.notifier = CommandNotifier(config.notify_command)
            try:
                Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"log dir {self.log_dir}: {exc.strerror or exc}") from exc
            if not os.access(self.log_dir, os.W_OK | os.X_OK):  # else every job would fail
                raise ConfigError(f"log dir {self.log_dir}: not writable by this user")
            reaper.adopt_orphans()  # what jobs leave behind comes back to this process
            if config.listen is not None:
                self._start_endpoint(config.listen)
            record = self.record()
            try:
                # The record carries the lease token: it lets a restart on this host take
                # over the lease of a crashed process (compare-and-set).
                self.lease.acquire(record, holder_is_dead=_crashed_here)
            except JobgroveError:
                if self.endpoint is not None:
                    self.endpoint.stop()
                    self.endpoint = None
                raise
            try:
                undo_kinds = {k for k in kind_names() if (cls := kind_class(k)) and cls.has_undo()}
                upkeep = Upkeep(self.store, self.registry, self.lease, record,
                                heartbeat=config.heartbeat_interval,
                                reconcile_interval=config.reconcile_interval,
                                undo_kinds=undo_kinds, notifier=self.notifier)
                reaped = upkeep.reap_own()
                if reaped:
                    log.warning("failed %d job(s) left RUNNING by a previous process of node %s",
                                len(reaped), self.name)
                self.actor = NodeActor.start(
                    self.store, self.name, concurrency=self.concurrency, log_dir=self.log_dir,
                    abort_grace=config.abort_grace, upkeep=upkeep,
                    on_log_growth=self.on_log_growth, log_keep=config.log_keep_bytes,
                    stats=self.stats)
                actor = self.actor
                self._listener = Listener(
                    self.store, [self.keys.node_channel(self.name)],
                    on_message=lambda _ch, msg: _route(actor, msg),
                    on_up=lambda: actor.tell(Reconnected()),
                    on_down=lambda err: actor.tell(ListenerDown(err)),
                    name=f"jobgrove-pubsub-{self.name}")
                self._listener.start()
                self._ticker = Ticker(actor, config.tick, name=f"jobgrove-ticker-{self.name}")
                self._ticker.start()
                self._housekeeping.start()
            except BaseException:
                # Leave nothing behind: no lease held, no endpoint listening, no threads.
                self._abandon_start()
                raise
            atexit.register(self._stop_at_exit)
            log.info("node %s started (concurrency %d, logs in %s)", self.name,
                     self.concurrency, self.log_dir)
            return self

    def _abandon_start(self) -> None:
        self._housekeeping.stop()
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
            self.lease.release()
        except StoreUnavailableError:
            log.warning("node %s: could not release its lease (it expires by itself)",
                        self.name)

    def _stop_at_exit(self) -> None:
        if self.actor is not None:
            log.warning("node %s was not stopped by its host; stopping it at exit", self.name)
            self.stop(graceful=False)

    def _start_endpoint(self, listen: str) -> None:
        self.endpoint = Endpoint(node_name=self.name, store=self.store, registry=self.registry,
                                 log_dir=self.log_dir, listen=listen, secret=self.secret,
                                 allowed_origins=self.config.allowed_origins,
                                 running_count=self._running_or_none, stats=self.stats)
        self.endpoint.start()
        self.address = self.config.advertise or self.endpoint.address
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
        running = int(proxy.running_count.get(timeout=_STOP_TIMEOUT))
        return running == 0 and int(proxy.pending_outcomes.get(timeout=_STOP_TIMEOUT)) == 0

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
            self._housekeeping.stop()
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
            deadline = time.monotonic() + max(self.config.abort_grace, SHELL_GRACE + 2.0)
            for runner in runners:
                if not runner.actor_stopped.wait(max(0.0, deadline - time.monotonic())):
                    log.warning("node %s: a job did not stop within its grace; it is "
                                "recorded FAILED and left to the process exit", self.name)
                    break
            try:
                # Fenced: the name is another process's now, and so is what runs on it.
                if not self.lease.fenced:
                    for root in self.store.node_trees(self.name):
                        self.store.reap(root, self.name, f"node {self.name} stopped",
                                        upto=self.lease.holder.epoch)
                    self.lease.release()
                    self.registry.mark_stopped(self.name, self.lease.token)
            except StoreUnavailableError as exc:
                log.error("node %s stopped without reaching Redis: %s", self.name, exc)
            if self.endpoint is not None:
                self.endpoint.stop()
                self.endpoint = None
            atexit.unregister(self._stop_at_exit)
            if isinstance(self.notifier, CommandNotifier):
                self.notifier.join(timeout=5.0)
            log.info("node %s stopped", self.name)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _import_kinds(modules: tuple[str, ...]) -> None:
    """Import the modules that register job kinds (``--import``); the working directory
    is importable, as it is for ``python -m``."""
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import-time error is a bad setting
            raise ConfigError(f"--import {module}: {type(exc).__name__}: {exc}") from exc
        except SystemExit as exc:  # a script, not a module of kinds: say so, do not exit
            raise ConfigError(f"--import {module}: the module exited (SystemExit: "
                              f"{exc.code}) instead of registering kinds") from None


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
