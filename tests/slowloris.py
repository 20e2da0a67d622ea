"""Hostile HTTP clients for the endpoint tests: slowloris attackers and a /health prober
that measures how long the endpoint was unavailable."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import selectors
import socket
import threading
import time


class Slowloris:
    """``count`` connections to ``address`` that each try to hold a slot of the server.

    ``mode`` "trickle": each sends ``GET /health HTTP/1.1`` and then one more header line
    every ``interval`` seconds, never the blank line that ends the head; "idle": each
    connects and sends nothing. A connection the server answers or closes is opened
    again (as a real attacker would), so the attack holds for as long as it runs.
    """

    def __init__(self, address: str, count: int, mode: str, interval: float = 0.5,
                 source: str = "127.0.0.1") -> None:
        host, port = address.rsplit(":", 1)
        self.target = (host, int(port))
        self.count = count
        self.mode = mode
        self.interval = interval
        self.source = source
        self.reconnects = 0
        self.refused = 0  # connections the server answered (with an error) or closed
        self._socks: dict[int, socket.socket] = {}
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, daemon=True, name="slowloris")

    def __enter__(self) -> Slowloris:
        for slot in range(self.count):
            self._open(slot)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self._socks.values():
            sock.close()
        self._sel.close()

    @property
    def held(self) -> int:
        return len(self._socks)

    def _open(self, slot: int) -> None:
        try:
            sock = socket.create_connection(self.target, timeout=2,
                                            source_address=(self.source, 0))
        except OSError:
            return  # tried again on the next round
        sock.setblocking(False)
        if self.mode == "trickle":
            with contextlib.suppress(OSError):
                sock.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self._socks[slot] = sock
        self._sel.register(sock, selectors.EVENT_READ, slot)

    def _drop(self, slot: int) -> None:
        sock = self._socks.pop(slot, None)
        if sock is not None:
            self._sel.unregister(sock)
            sock.close()
            self.refused += 1

    def _run(self) -> None:
        next_send = time.monotonic() + self.interval
        line = 0
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=max(0.0, min(0.05, next_send
                                                                 - time.monotonic()))):
                self._drop(key.data)  # answered (an error) or closed: the slot is lost
            for slot in range(self.count):
                if slot not in self._socks and not self._stop.is_set():
                    self.reconnects += 1
                    self._open(slot)
            if time.monotonic() >= next_send:
                next_send += self.interval
                line += 1
                if self.mode == "trickle":
                    for slot, sock in list(self._socks.items()):
                        try:
                            sock.send(f"X-Trickle-{line}: x\r\n".encode())
                        except OSError:
                            self._drop(slot)


@dataclasses.dataclass
class Availability:
    probes: int = 0
    failures: int = 0
    longest_outage: float = 0.0  # seconds from a failed probe's start to the next success
    slowest: float = 0.0  # slowest successful probe, seconds

    def __str__(self) -> str:
        return (f"{self.failures}/{self.probes} probes failed, longest outage "
                f"{self.longest_outage:.3f} s, slowest answer {self.slowest * 1000:.0f} ms")


def get_health(address: str, timeout: float) -> tuple[int, dict[str, object] | None]:
    """(HTTP status, JSON body) of ``GET /health``; status 0 if no answer in time."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return 0, None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
        return status, json.loads(body)
    except (IndexError, ValueError):
        return 0, None


def probe_health(address: str, duration: float, timeout: float,
                 interval: float = 0.05) -> Availability:
    """Ask for /health every ``interval`` for ``duration`` seconds (each try given
    ``timeout``) and measure how long it was not answered 200."""
    result = Availability()
    end = time.monotonic() + duration
    outage_start: float | None = None
    while time.monotonic() < end:
        start = time.monotonic()
        status, _ = get_health(address, timeout)
        took = time.monotonic() - start
        result.probes += 1
        if status == 200:
            result.slowest = max(result.slowest, took)
            if outage_start is not None:
                result.longest_outage = max(result.longest_outage,
                                            time.monotonic() - outage_start)
                outage_start = None
        else:
            result.failures += 1
            if outage_start is None:
                outage_start = start
        # Pacing of the prober itself, not synchronisation: it samples availability.
        time.sleep(max(0.0, interval - (time.monotonic() - start)))
    if outage_start is not None:
        result.longest_outage = max(result.longest_outage, time.monotonic() - outage_start)
    return result
