"""The node's HTTP/1.1 server: raw sockets, stdlib threads; websockets are handed to
``ws_connection`` (simple-websocket).

Threads: one accept thread, plus one thread per open connection (it parses the request
and, for a websocket, becomes that connection's only writer), plus simple-websocket's
reader thread per websocket. So at most ``1 + 2 * max_connections`` threads; requests
over the connection cap get a 503 from the accept thread without a thread of their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
import time
from typing import Protocol

from jobgrove.endpoint.connection import (
    GOING_AWAY,
    TOO_SLOW,
    Connection,
    ConnectionHandler,
    accept_websocket,
)
from jobgrove.endpoint.http import HttpError, Limits, Request, Response, parse_request_head

log = logging.getLogger(__name__)


class Handler(ConnectionHandler, Protocol):
    """What the server calls: ``check`` and ``http`` for every request, and the
    connection callbacks for websockets."""

    def check(self, request: Request, upgrade: bool) -> Response | None: ...
    def http(self, request: Request) -> Response: ...


class WsServer:
    """Serves ``handler`` on ``host:port`` (port 0: any free port; see ``address``)."""

    def __init__(self, host: str, port: int, handler: Handler, *, ws_path: str = "/ws",
                 limits: Limits | None = None, name: str = "jg-http") -> None:
        self.handler = handler
        self.ws_path = ws_path
        self.limits = limits or Limits()
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listen = socket.socket(family, socket.SOCK_STREAM)
        self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listen.bind((host, port))
        self._listen.listen(128)
        self._listen.settimeout(0.25)
        self._bound: tuple[str, int] = self._listen.getsockname()[:2]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self.connections: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name=f"{name}-accept")
        #: Requests refused for the connection cap, and viewers dropped as too slow.
        self.refused = 0
        self.dropped = 0

    @property
    def address(self) -> tuple[str, int]:
        return self._bound

    def start(self) -> None:
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._accept_thread.join(timeout)
        with contextlib.suppress(OSError):
            self._listen.close()
        for conn in list(self.connections.values()):
            conn.close(GOING_AWAY, "node endpoint stopping")
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def thread_count(self) -> int:
        """Threads of this server alive now (accept, connection and reader threads)."""
        return sum(1 for t in threading.enumerate() if t.name.startswith(self.name))

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self._listen.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("accept failed")
                time.sleep(0.1)
                continue
            with self._lock:
                full = len(self._threads) >= self.limits.max_connections
                if not full:
                    cid = next(self._ids)
                    thread = threading.Thread(
                        target=self._handle, args=(sock, f"{peer[0]}:{peer[1]}", cid),
                        daemon=True, name=f"{self.name}-{cid}")
                    self._threads.add(thread)
            if full:
                self.refused += 1
                _refuse(sock, Response(503, b'{"type":"error","code":"unavailable",'
                                            b'"message":"too many connections"}'))
                continue
            thread.start()

    def _handle(self, sock: socket.socket, peer: str, cid: int) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.limits.send_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer)
            sock.settimeout(self.limits.header_timeout)
            try:
                request, leftover = self._read_request(sock, peer)
                upgrade = request.path == self.ws_path
                refusal = self.handler.check(request, upgrade)
                if refusal is not None:
                    sock.sendall(refusal.encode())
                elif upgrade:
                    self._upgrade(sock, request, leftover, cid)
                    return
                else:
                    response = self.handler.http(request)
                    sock.sendall(response.encode(head_only=request.method == "HEAD"))
            except HttpError as exc:
                body = json.dumps({"type": "error", "message": str(exc), "code": (
                    "too_large" if exc.status in (413, 431) else "bad_request")}).encode()
                with contextlib.suppress(OSError):
                    sock.sendall(Response(exc.status, body).encode())
            except (OSError, TimeoutError):
                pass  # the client went away or timed out: nothing to answer
            except Exception:
                log.exception("error serving %s", peer)
                with contextlib.suppress(OSError):
                    sock.sendall(Response(500, b'{"type":"error","code":"unavailable",'
                                               b'"message":"internal error"}').encode())
            _linger_close(sock)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _read_request(self, sock: socket.socket, peer: str) -> tuple[Request, bytes]:
        buf = b""
        limit = self.limits.max_request_bytes
        while b"\r\n\r\n" not in buf:
            if len(buf) > limit:
                raise HttpError(431, f"request head larger than {limit} bytes")
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("client closed before sending a request")
            buf += chunk
        return parse_request_head(buf, limit, peer)

    def _upgrade(self, sock: socket.socket, request: Request, leftover: bytes,
                 cid: int) -> None:
        h = request.headers
        if "websocket" not in h.get("upgrade", "").lower() \
                or "upgrade" not in h.get("connection", "").lower():
            raise HttpError(426, "this URL only serves websocket upgrades")
        if h.get("sec-websocket-version") != "13" or not h.get("sec-websocket-key") \
                or not h.get("host"):
            raise HttpError(400, "bad websocket handshake (version 13, key and Host needed)")
        sock.settimeout(None)
        conn = accept_websocket(cid, sock, request, leftover, self.limits,
                                reader_name=f"{self.name}-{cid}-reader")
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


_REFUSERS = threading.BoundedSemaphore(8)


def _refuse(sock: socket.socket, response: Response) -> None:
    """Answer over the connection cap from a short-lived thread (at most 8 at once;
    past that, under a flood, the connection is just closed)."""
    if not _REFUSERS.acquire(blocking=False):
        sock.close()
        return

    def answer() -> None:
        try:
            with contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(response.encode())
            _linger_close(sock)
        finally:
            _REFUSERS.release()

    threading.Thread(target=answer, daemon=True, name="jg-http-refuse").start()
