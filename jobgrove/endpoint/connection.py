"""One websocket viewer of the node endpoint: the handshake, the send queue and the
connection's writer thread.

Writing: everything sent on a websocket goes through the connection's own thread,
including the handshake and the control frames simple-websocket's reader emits (it is
given a socket proxy whose ``send`` only queues). Producers call ``Connection.push``,
which never blocks: past ``queue_bytes`` queued the viewer is dropped with close code
1008. The writer uses non-blocking sends, so a viewer that stops reading stalls only
its own thread, and one that makes no progress for ``send_timeout`` is dropped too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Protocol

import simple_websocket

from jobgrove.endpoint.http import HttpError, Limits, Request
from jobgrove.endpoint.wire import close_frame, error_frame

log = logging.getLogger(__name__)

#: Close codes: 1001 server stopping, 1008 too slow (queue full or no progress).
GOING_AWAY = 1001
TOO_SLOW = 1008


def accept_websocket(cid: int, sock: socket.socket, request: Request, leftover: bytes,
                     limits: Limits, reader_name: str,
                     handshake_until: float | None = None) -> Connection:
    """Answer an upgrade request whose headers were checked: the handshake is queued
    for the connection's thread (``Connection.serve``), which sends it first, and drops
    the client if it is not all written by ``handshake_until`` (time.monotonic)."""
    conn = Connection(cid, sock, request, limits, handshake_until)
    # Compression is never negotiated: frames are encoded once for every viewer,
    # and a deflate context per viewer would cost ~300 KiB each.
    environ: dict[str, Any] = {
        f"HTTP_{k.upper().replace('-', '_')}": v for k, v in request.headers.items()
        if k != "sec-websocket-extensions"}
    environ["werkzeug.socket"] = _SockProxy(conn, sock, leftover)
    thread_class = functools.partial(threading.Thread, daemon=True, name=reader_name)
    try:
        conn.ws = simple_websocket.Server(
            environ, ping_interval=limits.ping_interval or None,
            max_message_size=limits.max_message_bytes,
            thread_class=thread_class, event_class=lambda: conn._event)
    except simple_websocket.ConnectionError:
        raise HttpError(400, "bad websocket handshake") from None
    return conn


class ConnectionHandler(Protocol):
    """What a connection calls, from its own thread."""

    def opened(self, conn: Connection) -> None: ...
    def message(self, conn: Connection, data: str | bytes) -> None: ...
    def drained(self, conn: Connection) -> None: ...
    def closed(self, conn: Connection) -> None: ...


class _SockProxy:
    """What simple-websocket sees as its socket: reads go to the real socket, writes
    are queued for the connection's writer thread (so frames never interleave)."""

    def __init__(self, conn: Connection, sock: socket.socket, leftover: bytes) -> None:
        self._conn = conn
        self._sock = sock
        self._leftover = leftover

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, n: int) -> bytes:
        if self._leftover:
            data, self._leftover = self._leftover[:n], self._leftover[n:]
            return data
        return self._sock.recv(n)

    def send(self, data: bytes) -> int:
        self._conn._control_out(bytes(data))
        return len(data)

    def close(self) -> None:  # the reader thread is done
        self._conn._reader_done = True
        self._conn._event.set()


class Connection:
    """One websocket viewer. ``push``, ``room`` and ``close`` are thread-safe."""

    def __init__(self, cid: int, sock: socket.socket, request: Request, limits: Limits,
                 handshake_until: float | None = None) -> None:
        self.id = cid
        self.request = request
        self.peer = request.peer
        self.limits = limits
        self.close_code: int | None = None
        self._sock = sock
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._control: list[bytes] = []
        self._frames: deque[bytes] = deque()
        self._queued = 0
        self._out = memoryview(b"")
        self._want_room = False
        self._close_req: tuple[int, str] | None = None
        self._reader_done = False
        self._last_progress = time.monotonic()
        self._handshake_until = handshake_until
        self.ws: Any = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.peer}>"

    @property
    def closed(self) -> bool:
        return self._close_req is not None or self._reader_done

    def push(self, frame: bytes, force: bool = False) -> bool:
        """Queue a complete frame; False if the viewer is gone or was just dropped.
        ``force``: a frame that may exceed the cap on its own (a tree snapshot), taken
        if the queue is below ``queue_high``."""
        with self._lock:
            if self._close_req is not None:
                return False
            over = self._queued + len(frame) > self.limits.queue_bytes
            if over and not (force and self._queued < self.limits.queue_high):
                self._close_req = (TOO_SLOW, "send queue full: viewer too slow")
                self._event.set()
                return False
            self._frames.append(frame)
            self._queued += len(frame)
        self._event.set()
        return True

    def room(self) -> int:
        """Bytes of log data that may be queued now (<= 0: wait for ``drained``)."""
        with self._lock:
            room = self.limits.queue_high - self._queued
            if room <= 0:
                self._want_room = True
            return room

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            if self._close_req is None:
                self._close_req = (code, reason)
        self._event.set()

    # -- the connection's own thread ---------------------------------------------------
    def _control_out(self, data: bytes) -> None:
        with self._lock:
            self._control.append(data)
            self._queued += len(data)
        self._event.set()

    def _refill(self) -> bool:
        with self._lock:
            if self._control:
                self._out = memoryview(b"".join(self._control))
                self._control.clear()
            elif self._frames and self._close_req is None and self.ws.connected:
                batch, size = [], 0
                while self._frames and size < 65536:
                    frame = self._frames.popleft()
                    batch.append(frame)
                    size += len(frame)
                self._out = memoryview(b"".join(batch))
            return bool(self._out)

    def _flush(self) -> bool:
        """Write what the socket takes now; False if the socket is broken."""
        while self._out or self._refill():
            try:
                sent = self._sock.send(self._out, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            self._out = self._out[sent:]
            with self._lock:
                self._queued -= sent
            self._last_progress = time.monotonic()
        return True

    def _pending(self) -> bool:
        return bool(self._out or self._control
                    or (self._frames and self._close_req is None and self.ws.connected))

    def _writable(self, timeout: float) -> None:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLOUT)
        poller.poll(int(timeout * 1000))

    def _abort(self, code: int, reason: str) -> None:
        """Drop the viewer now: a close frame if one fits, then shut the socket."""
        self.close_code = code
        if not self._out:
            with contextlib.suppress(OSError):
                self._sock.send(close_frame(code, reason), socket.MSG_DONTWAIT)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def serve(self, handler: ConnectionHandler) -> None:
        """The connection's thread, until the viewer is gone."""
        handler.opened(self)
        try:
            self._loop(handler)
        finally:
            with self._lock:
                if self._close_req is None:
                    self._close_req = (1000, "")
                self._frames.clear()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self.ws.thread.join(2.0)
            self._sock.close()
            handler.closed(self)

    def _loop(self, handler: ConnectionHandler) -> None:
        closing_since: float | None = None
        while True:
            if self._pending():
                self._writable(0.1)  # back as soon as the socket takes more
            else:
                self._event.wait(5.0)
                # Output that appears after an idle spell starts its progress clock now.
                self._last_progress = time.monotonic()
            self._event.clear()
            while self.ws.input_buffer and self._close_req is None:
                try:
                    handler.message(self, self.ws.input_buffer.pop(0))
                except Exception:  # a bug must cost one request, not the connection
                    log.exception("error handling a message from %s", self.peer)
                    self.push(error_frame("unavailable", "internal error"))
            if not self._flush():
                self.close_code = self.close_code or 1006
                return
            if self._handshake_until is not None:
                # The handshake answer is the first thing queued: once nothing is left
                # half-written after a flush, it is out.
                if not self._out:
                    self._handshake_until = None
                elif time.monotonic() > self._handshake_until:
                    self._abort(TOO_SLOW, "handshake not completed in time")
                    return
            with self._lock:
                if self._want_room and self._queued <= self.limits.queue_high // 2:
                    self._want_room = False
                    wake = True
                else:
                    wake = False
            if wake:
                handler.drained(self)
            now = time.monotonic()
            if self._close_req is not None:
                code, reason = self._close_req
                if code == TOO_SLOW or (closing_since is not None and now - closing_since > 1):
                    self._abort(code, reason)
                    return
                if closing_since is None:
                    closing_since = now
                    self.close_code = code
                    self._control_out(close_frame(code, reason))
                    continue
                if not self._pending():
                    return
            elif (self._reader_done or not self.ws.connected) \
                    and (not self._pending() or now - self._last_progress > 1):
                self.close_code = self.close_code or self.ws.close_reason
                return
            if self._pending() and now - self._last_progress > self.limits.send_timeout:
                self._abort(TOO_SLOW, "no progress sending: viewer too slow")
                return
