"""Connections over the server's caps, handled without a thread of their own.

When every connection slot is taken, or the client's address already has
``max_per_address`` connections still sending their request, the accept thread keeps
the new connection on its *desk*: it reads the request head without blocking, between
accepts, for at most ``overflow_timeout``. Once the head is complete, a request for a
reserved path (the node's ``/health``) goes to the *reserve*: one thread that answers
only those paths, so a full connection table never hides the node's health. Any
other request gets a connection thread if the table has room by then (a client that
was only over its address's cap, in a burst of connections, is served as usual), else
``503``; a connection whose head does not arrive in time gets ``503`` too.

Why a desk and a reserve rather than a reserved slot: a slot is a thread that reads a
request head, and a slowloris holds a thread by never finishing its head, so any
reserved slot could be taken the same way the others were. The desk reads heads
without a thread, and a request reaches the reserve only once its whole head arrived,
so holding the reserve takes complete requests, which it answers at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

from jobgrove.endpoint.http import HttpError, Limits, Request, Response, parse_request_head

log = logging.getLogger(__name__)

#: Connections on the desk at once; past it the oldest is closed (a legitimate client
#: sends its request head within milliseconds of connecting, so it is never the oldest).
MAX_WAITING = 256
#: Requests waiting for the reserve; past it they get ``503`` at once.
RESERVE_QUEUE = 16
#: Seconds an answered connection is kept to read what the client still sends (closing
#: with unread input would reset the connection and could destroy the answer).
_LINGER = 1.0


def error_response(status: int, code: str, message: str) -> Response:
    body = json.dumps({"type": "error", "code": code, "message": message}).encode()
    return Response(status, body)


@dataclasses.dataclass(eq=False)
class _Waiting:
    sock: socket.socket
    peer: str
    refusal: str  # why it has no slot: the message of its 503
    accepted: float
    deadline: float
    buf: bytes = b""
    answered: bool = False


#: The server's ``hand_over(sock, peer, head, accepted)``: serve a connection whose
#: request head is complete on a thread of its own, if the table has room (False if not).
HandOver = Callable[[socket.socket, str, bytes, float], bool]


class Desk:
    """Connections without a slot, on the accept thread's ``selector``. ``respond`` answers
    a request for one of ``reserved`` paths (from the reserve thread, so it may block)."""

    def __init__(self, selector: selectors.BaseSelector, limits: Limits,
                 reserved: tuple[str, ...], respond: Callable[[Request], Response],
                 hand_over: HandOver, name: str) -> None:
        self._sel = selector
        self._limits = limits
        self._reserved = reserved
        self._respond = respond
        self._hand_over = hand_over
        self._timeout = min(limits.overflow_timeout, limits.header_timeout)
        self._waiting: dict[socket.socket, _Waiting] = {}  # oldest first
        self._queue: queue.Queue[tuple[socket.socket, Request] | None] = queue.Queue(
            RESERVE_QUEUE)
        self._thread = threading.Thread(target=self._serve_reserve, daemon=True,
                                        name=f"{name}-reserve")
        #: Requests answered by the reserve (tests and metrics read it).
        self.reserved_answers = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self) -> None:
        if self._reserved:
            self._thread.start()

    def stop(self) -> None:
        for entry in list(self._waiting.values()):
            self._close(entry)
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(2.0)

    # -- the accept thread ------------------------------------------------------------------
    def add(self, sock: socket.socket, peer: str, refusal: str) -> None:
        if len(self._waiting) >= MAX_WAITING:
            self._close(next(iter(self._waiting.values())))
        sock.setblocking(False)
        now = time.monotonic()
        entry = _Waiting(sock, peer, refusal, now, now + self._timeout)
        self._waiting[sock] = entry
        self._sel.register(sock, selectors.EVENT_READ, entry)
        self.readable(entry)  # the request is often there already

    def readable(self, entry: _Waiting) -> None:
        try:
            chunk = entry.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(entry)
            return
        if entry.answered:
            return  # what a client sends after our answer is read and dropped
        entry.buf += chunk
        limit = self._limits.max_request_bytes
        if b"\r\n\r\n" not in entry.buf and len(entry.buf) <= limit:
            return
        try:
            request, _ = parse_request_head(entry.buf, limit, entry.peer)
        except HttpError:
            request = None
        if request is not None and request.path in self._reserved:
            if not self._queue.full():  # (this thread is the only producer)
                self._forget(entry)
                entry.sock.setblocking(True)
                self._queue.put_nowait((entry.sock, request))
                return
            entry.refusal = f"too many connections, and too many waiting for {request.path}"
        else:
            self._forget(entry)
            entry.sock.setblocking(True)
            if self._hand_over(entry.sock, entry.peer, entry.buf, entry.accepted):
                return
            entry.refusal = f"too many connections (limit {self._limits.max_connections})"
            entry.sock.setblocking(False)
            self._waiting[entry.sock] = entry
            self._sel.register(entry.sock, selectors.EVENT_READ, entry)
        self._answer(entry, error_response(503, "unavailable", entry.refusal))

    def expire(self, now: float) -> None:
        for entry in [e for e in self._waiting.values() if e.deadline <= now]:
            if entry.answered:
                self._close(entry)
            else:  # no complete request head in time
                self._answer(entry, error_response(503, "unavailable", entry.refusal))

    # -- helpers ------------------------------------------------------------------------------
    def _answer(self, entry: _Waiting, response: Response) -> None:
        try:
            entry.sock.send(response.encode())  # small: a fresh socket's buffer takes it
            entry.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(entry)
            return
        entry.answered = True
        entry.deadline = time.monotonic() + _LINGER

    def _forget(self, entry: _Waiting) -> None:
        if self._waiting.pop(entry.sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(entry.sock)

    def _close(self, entry: _Waiting) -> None:
        self._forget(entry)
        entry.sock.close()

    # -- the reserve thread -----------------------------------------------------------------
    def _serve_reserve(self) -> None:
        while (item := self._queue.get()) is not None:
            sock, request = item
            try:
                sock.settimeout(1.0)
                try:
                    response = self._respond(request)
                except Exception:
                    log.exception("error answering %s for %s", request.path, request.peer)
                    response = error_response(500, "unavailable", "internal error")
                sock.sendall(response.encode(head_only=request.method == "HEAD"))
                self.reserved_answers += 1
                sock.shutdown(socket.SHUT_WR)
                # What the client still sends is read (briefly) so the close is not a reset.
                until = time.monotonic() + 0.2
                sock.settimeout(0.05)
                while time.monotonic() < until and sock.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                sock.close()
