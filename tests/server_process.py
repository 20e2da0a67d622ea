"""One redis-server process (a data node or a sentinel) that tests may kill, pause and
restart, and ``Setup``: a group of them in one temp dir (``tests.servers``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import dies_with_parent, free_port, wait_for

T = TypeVar("T")
HOST = "127.0.0.1"
#: Lean data nodes: nothing persisted, a replica syncs at once.
LEAN = ("--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes",
        "--repl-diskless-sync-delay", "0")


def redis_exe(name: str = "redis-server") -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} not found: install it (apt-get install redis-server); "
                           ".ci/run does this")
    return exe


class ServerProcess:
    """One redis-server (a data node or a sentinel) in a directory of its own, to kill
    (-9), pause (SIGSTOP), resume and restart on the same port."""

    def __init__(self, root: Path, name: str, args: Iterable[str] = (), *,
                 sentinel_conf: list[str] | None = None, cluster_bus: bool = False) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.log = self.dir / "redis.log"
        self.args = list(args)
        self.sentinel_conf = sentinel_conf
        self.port = free_port()
        self.bus_port = free_port() if cluster_bus else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else "up" if self.alive else "down"
        return f"<{self.name} :{self.port} {state}>"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        common = ["--port", str(self.port), "--bind", HOST, "--protected-mode", "no",
                  "--dir", str(self.dir), "--logfile", str(self.log)]
        if self.sentinel_conf is not None:
            # The sentinel rewrites its config (known peers, epochs, the primary now):
            # written once, kept across restarts.
            conf = self.dir / "sentinel.conf"
            if not conf.exists():
                conf.write_text("\n".join(self.sentinel_conf) + "\n", encoding="utf-8")
            return [redis_exe(), str(conf), "--sentinel", *common]
        if self.bus_port is not None:
            common += ["--cluster-port", str(self.bus_port)]
        return [redis_exe(), *common, *self.args]

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client of this one server (short timeouts, no retries)."""
        kwargs = {"socket_timeout": 2.0, "socket_connect_timeout": 1.0,
                  "retry": Retry(NoBackoff(), 0), **kwargs}
        return redis.Redis(host=HOST, port=self.port, decode_responses=True, **kwargs)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"--- {self.name} (:{self.port}): no log ---"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.name} (:{self.port}) log tail ---\n{tail}"

    def start(self, timeout: float = 10.0, *, new_port_on_clash: bool = False) -> None:
        """Start and wait until it answers PING. ``new_port_on_clash``: if the port was
        taken meanwhile (another test's server), retry on new free ports."""
        for attempt in range(3):
            self.proc = subprocess.Popen([*dies_with_parent(), *self.command()],
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            self.paused = False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.ping():
                    return
                time.sleep(0.01)
            code = self.proc.poll()
            clash = code is not None and "Address already in use" in self.log_tail(5)
            self.kill()
            if not (clash and new_port_on_clash and attempt < 2):
                why = f"exited with {code}" if code is not None else f"silent after {timeout}s"
                raise RuntimeError(f"{self.name} on port {self.port} {why}\n{self.log_tail()}")
            self.port = free_port()
            if self.bus_port is not None:
                self.bus_port = free_port()

    def kill(self) -> None:
        """SIGKILL (a crash, as clients see it)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
            self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self, timeout: float = 10.0) -> None:
        self.kill()
        self.start(timeout)

    def info(self, section: str) -> dict[str, str]:
        """INFO ``section`` as raw strings (empty if the server does not answer)."""
        try:
            with self.client() as client:
                return {k: str(v) for k, v in client.info(section).items()}
        except (redis.RedisError, OSError):
            return {}


class Setup:
    """A group of servers in one temp dir; a context manager that closes them all."""

    kind = "setup"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"jobgrove-{self.kind}-"))
        self.servers: list[ServerProcess] = []
        self.startup_seconds = 0.0
        self.teardown_seconds = 0.0

    def add(self, name: str, args: Iterable[str] = (), **kwargs: Any) -> ServerProcess:
        server = ServerProcess(self.root, name, args, **kwargs)
        self.servers.append(server)
        return server

    def logs(self, servers: Iterable[ServerProcess] | None = None) -> str:
        return "\n".join(s.log_tail() for s in (self.servers if servers is None else servers))

    def wait(self, condition: Callable[[], T], timeout: float, what: str,
             servers: Iterable[ServerProcess] | None = None) -> T:
        """``wait_for`` that fails with the servers' log tails."""
        try:
            return wait_for(condition, timeout=timeout, interval=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs(servers)}") from None

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        began = time.monotonic()
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        self.teardown_seconds = time.monotonic() - began

    def __enter__(self) -> Setup:
        began = time.monotonic()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "yes", "true")
