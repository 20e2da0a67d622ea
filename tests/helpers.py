"""Test helpers: a private redis-server, waiting on conditions with deadlines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

T = TypeVar("T")



_SETPRIV = shutil.which("setpriv")


def dies_with_parent() -> list[str]:
    """A command prefix that makes a server this process starts die with it (Linux
    ``PR_SET_PDEATHSIG`` through util-linux's ``setpriv``, when it is installed): a
    test run that crashes leaves no redis-server or browser behind. (Not a
    ``preexec_fn``: that is unsafe in a process with threads.)"""
    return [_SETPRIV, "--pdeathsig", "KILL"] if _SETPRIV else []

def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
             what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                 f"(last value: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A private redis-server on a free port that tests may stop, kill and restart."""

    def __init__(self, durable: bool = False, extra: Sequence[str] = ()) -> None:
        """``durable``: append-only file fsynced on every write, so a stop/start (even a
        SIGKILL) keeps the data, as a production Redis would. ``extra``: more
        redis-server options (a unix socket, a TLS port)."""
        self.durable = durable
        self.extra = list(extra)
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found: install it (apt-get install "
                               "redis-server); .ci/run does this")
        self.exe = exe
        self.dir = tempfile.mkdtemp(prefix="jobgrove-redis-")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                           socket_timeout=5, **kwargs)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*dies_with_parent(), self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes" if self.durable else "no",
             "--appendfsync", "always", "--dir", self.dir, "--protected-mode", "no",
             "--logfile", os.path.join(self.dir, "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout=10, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crash looks like to clients)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
