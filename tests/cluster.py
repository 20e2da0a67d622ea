"""Real node processes for the cluster tests (``tests/test_cluster_*.py``).

Each node is ``python -m jobgrove node ...`` in its own process, with its stderr in a
file of its own (shown when a test fails), killed at teardown whatever happened.
``Cluster.start`` returns once the node is registered and alive in Redis.

This module is also imported by the node processes (``--import tests.cluster``): it
registers the job kinds of ``tests.cluster_kinds``. Keep it free of pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import redis

from jobgrove import Client
from jobgrove.jobs.log import log_path
from tests.cluster_kinds import runs  # noqa: F401  (registers the kinds; runs: re-exported)
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
#: How long a node process may take to register (two cores shared with other suites).
START_TIMEOUT = 30.0
#: Defaults of the nodes tests start: short leases keep node-failure tests quick.
LEASE = 1.5
ABORT_GRACE = 2.0


# -- node processes ---------------------------------------------------------------------
class NodeProc:
    """One ``jobgrove node`` process."""

    def __init__(self, name: str, redis_url: str, log_dir: Path, stderr_path: Path,
                 argv: list[str], proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.stderr_path = stderr_path
        self.argv = argv
        self.proc = proc

    def __repr__(self) -> str:
        return f"<NodeProc {self.name} pid {self.pid} rc {self.proc.poll()}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_file(self, job_id: str) -> Path:
        """Where this node writes the log of ``job_id`` (``<dir>/<id[:2]>/<id[2:]>.log``)."""
        return log_path(self.log_dir, job_id)

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the rest of the cluster."""
        if self.running:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def signal(self, signum: int) -> None:
        if self.running:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful: running jobs finish) and wait for the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def record_of(client: Client, name: str) -> dict[str, Any] | None:
    for node in client.nodes():
        if node["name"] == name:
            return node
    return None


class Cluster:
    """Starts node processes; ``close()`` kills whatever still runs."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: list[NodeProc] = []
        self._count = 0

    def spawn(self, name: str, redis_url: str, *, lease: float = LEASE,
              concurrency: int = 4, abort_grace: float = ABORT_GRACE,
              listen: str = "none", notify_command: str | None = None,
              imports: Iterable[str] = ("tests.cluster",), log_dir: Path | None = None,
              extra: Iterable[str] = (), env: dict[str, str] | None = None) -> NodeProc:
        """Start a node process without waiting for it."""
        self._count += 1
        log_dir = log_dir or self.base / f"logs-{name}"
        stderr_path = self.base / f"node-{name}-{self._count}.stderr"
        argv = [sys.executable, "-m", "jobgrove", "node", "--name", name,
                "--redis", redis_url, "--listen", listen, "--log-dir", str(log_dir),
                "--concurrency", str(concurrency), "--lease", str(lease),
                "--abort-grace", str(abort_grace), "--log-level", "INFO"]
        for module in imports:
            argv += ["--import", module]
        if notify_command is not None:
            argv += ["--notify-command", notify_command]
        argv += list(extra)
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=subprocess.STDOUT,
                                    env={**_clean_env(), "PYTHONUNBUFFERED": "1",
                                         **(env or {})})
        node = NodeProc(name, redis_url, log_dir, stderr_path, argv, proc)
        self.nodes.append(node)
        return node

    def wait_registered(self, node: NodeProc, timeout: float = START_TIMEOUT) -> NodeProc:
        """Wait until ``node``'s own process holds its name's lease in Redis."""
        client = Client(node.redis_url)

        def up() -> bool:
            if not node.running:
                raise AssertionError(f"node {node.name} exited with {node.proc.returncode}:\n"
                                     f"{node.stderr()[-3000:]}")
            try:
                record = record_of(client, node.name)
            except Exception:
                return False
            return bool(record and record["alive"] and record.get("pid") == node.pid)

        wait_for(up, timeout=timeout, interval=0.05, what=f"node {node.name} to register")
        return node

    def start(self, name: str, redis_url: str, **kwargs: Any) -> NodeProc:
        return self.wait_registered(self.spawn(name, redis_url, **kwargs))

    def start_many(self, names: Iterable[str], redis_url: str,
                   **kwargs: Any) -> dict[str, NodeProc]:
        """Start several nodes at once (in parallel) and wait for all of them."""
        started = {name: self.spawn(name, redis_url, **kwargs) for name in names}
        for node in started.values():
            self.wait_registered(node)
        return started

    def report(self) -> str:
        parts = []
        for node in self.nodes:
            parts.append(f"----- {node!r} ({node.stderr_path}) -----\n{node.stderr()[-6000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every node still running: SIGTERM twice (an immediate stop that aborts
        running jobs, shell process groups included), then SIGKILL."""
        alive = [n for n in self.nodes if n.running]
        for node in alive:
            node.signal(signal.SIGTERM)
        for node in alive:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + 8.0
        for node in alive:
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)


@contextlib.contextmanager
def running_cluster(base: Path) -> Iterator[Cluster]:
    cluster = Cluster(base)
    try:
        yield cluster
    finally:
        cluster.close()
        # Captured output: pytest shows it only for failed tests.
        print(cluster.report())


def _clean_env() -> dict[str, str]:
    """The test process's environment without jobgrove settings that would leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBGROVE_")}


# -- observing a tree -------------------------------------------------------------------
def flat(client: Client, root: str) -> dict[str, dict[str, Any]]:
    """Every job of the tree by id (status objects without children)."""
    return client.store.tree_flat(root)


def states(client: Client, root: str) -> dict[str, str]:
    return {i: j["state"] for i, j in flat(client, root).items()}


def wait_state(client: Client, job_id: str, state: str, timeout: float = 15.0) -> None:
    wait_for(lambda: client.job(job_id)["state"] == state, timeout=timeout, interval=0.02,
             what=f"job {job_id} to be {state} (now {client.job(job_id)['state']})")


def wait_done(client: Client, root: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the tree is done (root finished, nothing running); its status."""
    wait_for(lambda: client.store.tree_finished(root), timeout=timeout, interval=0.02,
             what=f"tree {root} to finish (states {states(client, root)})")
    return client.status(root)


class TreeEvents:
    """Records every message published on a tree's channel (a redis pub/sub of its own)."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self._client = redis.Redis.from_url(redis_url, decode_responses=True,
                                            socket_timeout=5)
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        self.messages: list[dict[str, Any]] = []
        # Subscribed for sure before the test goes on.
        wait_for(lambda: self._pubsub.get_message(timeout=0.1), timeout=5,
                 what=f"subscription to {channel}")

    def drain(self, quiet: float = 0.0) -> list[dict[str, Any]]:
        """Read what has arrived (waiting up to ``quiet`` s for each further message)."""
        while True:
            message = self._pubsub.get_message(timeout=quiet)
            if message is None:
                return self.messages
            if message.get("type") == "message":
                try:
                    self.messages.append(json.loads(message["data"]))
                except ValueError:
                    self.messages.append({"type": "unparsable", "data": message["data"]})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


def chain(nodes: list[str], depth: int, kind: str = "noop") -> dict[str, Any]:
    """A chain of ``depth`` jobs, the leaf on ``nodes[0]``, alternating over ``nodes``."""
    spec: dict[str, Any] | None = None
    for level in range(depth):
        job: dict[str, Any] = {"kind": kind, "node": nodes[level % len(nodes)],
                               "title": f"level {level}"}
        if spec is not None:
            job["children"] = [spec]
        spec = job
    assert spec is not None
    return spec
