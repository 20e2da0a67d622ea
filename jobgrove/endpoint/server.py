"""The node's HTTP/1.1 server: raw sockets, stdlib threads; websockets are handed to
``connection`` (simple-websocket).

Threads: one accept thread, plus one thread per open connection (it parses the request
and, for a websocket, becomes that connection's only writer), plus simple-websocket's
reader thread per websocket, plus the reserve thread (``overflow``). So at most
``2 + 2 * max_connections`` threads. A connection over the caps (every slot taken, or
its address has ``max_per_address`` connections still sending their request) has no
thread while it sends its request: the accept thread reads the head without blocking,
then hands ``/health`` to the reserve, and anything else to a thread of its own if
the table has room by then, else answers ``503`` (see ``overflow``).

Every phase has a total deadline counted from the accept: the request head
(``header_timeout``), the websocket handshake (``handshake_timeout``), and over the
caps the whole request (``overflow_timeout``); a client sending one byte at a time
gets no more time than a silent one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import selectors
import socket
import threading
import time
from typing import Protocol

from jobgrove.config import listen_error
from jobgrove.endpoint.connection import (
    GOING_AWAY,
    TOO_SLOW,
    Connection,
    ConnectionHandler,
    accept_websocket,
)
from jobgrove.endpoint.http import HttpError, Limits, Request, Response, parse_request_head
from jobgrove.endpoint.overflow import Desk
from jobgrove.errors import ConfigError

log = logging.getLogger(__name__)


class Handler(ConnectionHandler, Protocol):
    """What the server calls: ``check`` and ``http`` for every request, and the
    connection callbacks for websockets."""

    def check(self, request: Request, upgrade: bool) -> Response | None: ...
    def http(self, request: Request) -> Response: ...


class WsServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port; see ``address``).
    Requests for ``reserved`` paths are still answered when no slot is free (see
    ``overflow``). Raises ConfigError if the address cannot be bound."""

    def __init__(self, host: str, port: int, handler: Handler, *, ws_path: str = "/ws",
                 limits: Limits | None = None, name: str = "jg-http",
                 reserved: tuple[str, ...] = ()) -> None:
        self.handler = handler
        self.ws_path = ws_path
        self.limits = limits or Limits()
        self.name = name
        self._listen = _bind(host, port)
        self._bound: tuple[str, int] = self._listen.getsockname()[:2]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        #: Connections of each client address still sending their request head.
        self._pending: dict[str, int] = {}
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, None)
        self.desk = Desk(self._selector, self.limits, reserved, self._respond,
                         self._hand_over, name)
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"{name}-accept")
        self._accept_errors = 0
        #: Requests refused for the connection caps, and viewers dropped as too slow.
        self.refused = 0
        self.dropped = 0

    @property
    def address(self) -> tuple[str, int]:
        return self._bound

    def start(self) -> None:
        self.desk.start()
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._accept_thread.join(timeout)
        with contextlib.suppress(OSError):
            self._listen.close()
        self.desk.stop()
        self._selector.close()
        for conn in list(self.connections.values()):
            conn.close(GOING_AWAY, "node endpoint stopping")
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def thread_count(self) -> int:
        """Threads of this server alive now (accept, reserve, connection and reader threads)."""
        return sum(1 for t in threading.enumerate() if t.name.startswith(self.name))

    # -- the accept thread: accepts, and serves the desk --------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._selector.select(0.05 if len(self.desk) else 0.25)
            except (OSError, ValueError):
                return  # the selector was closed: stopping
            for key, _ in events:
                if key.data is None:
                    self._accept_some()
                else:
                    self.desk.readable(key.data)
            self.desk.expire(time.monotonic())

    def _accept_some(self) -> None:
        for _ in range(64):  # then serve the desk: a flood must not starve it
            try:
                sock, peer = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self._stop.is_set():
                    return
                # (Out of file descriptors, typically: the connection stays in the backlog.)
                self._accept_errors += 1
                if self._accept_errors in (1, 10, 100) or self._accept_errors % 1000 == 0:
                    log.error("accept failed (%d times so far): %s", self._accept_errors, exc)
                time.sleep(0.1)
                return
            self._admit(sock, peer[0], f"{peer[0]}:{peer[1]}", time.monotonic())

    def _admit(self, sock: socket.socket, host: str, peer: str, accepted: float) -> None:
        limits = self.limits
        with self._lock:
            if len(self._threads) >= limits.max_connections:
                refusal = f"too many connections (limit {limits.max_connections})"
            elif self._pending.get(host, 0) >= limits.max_per_address:
                refusal = (f"too many connections from {host} still sending their request "
                           f"(limit {limits.max_per_address})")
            else:
                refusal = ""
                thread = self._thread_for(sock, host, peer, accepted, b"")
                self._pending[host] = self._pending.get(host, 0) + 1
        if refusal:
            self.refused += 1
            self.desk.add(sock, peer, refusal)
        else:
            thread.start()

    def _hand_over(self, sock: socket.socket, peer: str, head: bytes, accepted: float) -> bool:
        """A connection from the desk whose request head is complete: served on a
        thread of its own if the table has room now (it no longer counts as pending)."""
        with self._lock:
            if len(self._threads) >= self.limits.max_connections:
                return False
            thread = self._thread_for(sock, None, peer, accepted, head)
        thread.start()
        return True

    def _thread_for(self, sock: socket.socket, host: str | None, peer: str, accepted: float,
                    head: bytes) -> threading.Thread:
        """(Under the lock.)"""
        cid = next(self._ids)
        thread = threading.Thread(target=self._handle,
                                  args=(sock, host, peer, cid, accepted, head),
                                  daemon=True, name=f"{self.name}-{cid}")
        self._threads.add(thread)
        return thread

    def _respond(self, request: Request) -> Response:
        """The answer to a request that needs no connection of its own (the reserve's)."""
        return self.handler.check(request, False) or self.handler.http(request)

    # -- one connection's thread ----------------------------------------------------------------
    def _handle(self, sock: socket.socket, host: str | None, peer: str, cid: int,
                accepted: float, head: bytes) -> None:
        """``host``: the address whose pending count this connection holds until its
        head is complete (None: not counted); ``head``: what was read of it already."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.limits.send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
            try:
                try:
                    request, leftover = self._read_request(
                        sock, peer, accepted + self.limits.header_timeout, head)
                finally:
                    if host is not None:
                        self._head_done(host)
                sock.settimeout(self.limits.send_timeout)
                upgrade = request.path == self.ws_path
                refusal = self.handler.check(request, upgrade)
                if refusal is not None:
                    sock.sendall(refusal.encode())
                elif upgrade:
                    self._upgrade(sock, request, leftover, cid,
                                  accepted + self.limits.handshake_timeout)
                    return
                else:
                    response = self.handler.http(request)
                    sock.sendall(response.encode(head_only=request.method == "HEAD"))
            except HttpError as exc:
                body = json.dumps({"type": "error", "message": str(exc), "code": (
                    "too_large" if exc.status in (413, 431) else "bad_request")}).encode()
                with contextlib.suppress(OSError):
                    sock.settimeout(1.0)
                    sock.sendall(Response(exc.status, body).encode())
            except (OSError, TimeoutError):
                pass  # the client went away or stopped reading: nothing to answer
            except Exception:
                log.exception("error serving %s", peer)
                with contextlib.suppress(OSError):
                    sock.sendall(Response(500, b'{"type":"error","code":"unavailable",'
                                               b'"message":"internal error"}').encode())
            _linger_close(sock)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _head_done(self, host: str) -> None:
        with self._lock:
            left = self._pending.get(host, 0) - 1
            if left > 0:
                self._pending[host] = left
            else:
                self._pending.pop(host, None)

    def _read_request(self, sock: socket.socket, peer: str, deadline: float,
                      buf: bytes) -> tuple[Request, bytes]:
        """The request head, which must be complete by ``deadline`` (a total: a client
        trickling one header line at a time gets no more time than a silent one)."""
        limit = self.limits.max_request_bytes
        while b"\r\n\r\n" not in buf:
            if len(buf) > limit:
                raise HttpError(431, f"request head larger than {limit} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HttpError(408, "request head not complete within "
                                     f"{self.limits.header_timeout:g} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue  # (the deadline check above answers it)
            if not chunk:
                raise OSError("client closed before sending a request")
            buf += chunk
        return parse_request_head(buf, limit, peer)

    def _upgrade(self, sock: socket.socket, request: Request, leftover: bytes,
                 cid: int, handshake_until: float) -> None:
        h = request.headers
        if "websocket" not in h.get("upgrade", "").lower() \
                or "upgrade" not in h.get("connection", "").lower():
            raise HttpError(426, "this URL only serves websocket upgrades")
        if h.get("sec-websocket-version") != "13" or not h.get("sec-websocket-key") \
                or not h.get("host"):
            raise HttpError(400, "bad websocket handshake (version 13, key and Host needed)")
        sock.settimeout(None)
        conn = accept_websocket(cid, sock, request, leftover, self.limits,
                                reader_name=f"{self.name}-{cid}-reader",
                                handshake_until=handshake_until)
        with self._lock:
            self.connections[cid] = conn
        try:
            conn.serve(self.handler)
        finally:
            with self._lock:
                self.connections.pop(cid, None)
                if conn.close_code == TOO_SLOW:
                    self.dropped += 1
                    log.warning("dropped slow viewer %s", conn.peer)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, non-blocking (the accept thread selects on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        raise ConfigError(listen_error(host, port, exc)) from exc
    sock.setblocking(False)
    return sock


def _linger_close(sock: socket.socket, limit: float = 1.0) -> None:
    """Close after the client read our answer: closing with its request still unread
    would reset the connection and could destroy the answer in flight."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(limit)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and sock.recv(65536):
            pass
    sock.close()
