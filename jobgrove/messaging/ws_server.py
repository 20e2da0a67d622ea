"""The node's HTTP/1.1 + websocket server: raw sockets, stdlib threads, simple-websocket.

Threads: one accept thread, plus one thread per open connection (it parses the request
and, for a websocket, becomes that connection's only writer), plus simple-websocket's
reader thread per websocket. So at most ``1 + 2 * max_connections`` threads; requests
over the connection cap get a 503 from the accept thread without a thread of their own.

Writing: everything sent on a websocket goes through the connection's own thread,
including the handshake and the control frames simple-websocket's reader emits (it is
given a socket proxy whose ``send`` only queues). Producers call ``Connection.push``,
which never blocks: past ``queue_bytes`` queued the viewer is dropped with close code
1008. The writer uses non-blocking sends, so a viewer that stops reading stalls only
its own thread, and one that makes no progress for ``send_timeout`` is dropped too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Protocol

import simple_websocket

from jobgrove.messaging.wire import (
    MAX_MESSAGE_BYTES,
    HttpError,
    Request,
    Response,
    close_frame,
    error_frame,
    parse_request_head,
)

log = logging.getLogger(__name__)

#: Close codes: 1001 server stopping, 1008 too slow (queue full or no progress).
GOING_AWAY = 1001
TOO_SLOW = 1008
@dataclasses.dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    #: Largest request head (request line + headers) accepted; bodies are refused.
    max_request_bytes: int = 16 * 1024
    max_message_bytes: int = MAX_MESSAGE_BYTES
    ping_interval: float = 20.0
    #: Hard cap of bytes queued for one viewer: past it the viewer is dropped.
    queue_bytes: int = 1 << 20
    #: Log data is only queued while less than this is waiting (flow control).
    queue_high: int = 256 * 1024
    send_timeout: float = 10.0
    header_timeout: float = 10.0
    #: SO_SNDBUF of each connection (None: the OS's autotuning). Smaller bounds kernel
    #: memory per viewer and detects a stalled viewer sooner.
    send_buffer: int | None = None


class Handler(Protocol):
    def check(self, request: Request, upgrade: bool) -> Response | None: ...
    def http(self, request: Request) -> Response: ...
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

    def __init__(self, cid: int, sock: socket.socket, request: Request, limits: Limits) -> None:
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

    def _serve(self, handler: Handler) -> None:
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

    def _loop(self, handler: Handler) -> None:
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
        conn = Connection(cid, sock, request, self.limits)
        # Compression is never negotiated: frames are encoded once for every viewer,
        # and a deflate context per viewer would cost ~300 KiB each.
        environ = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in h.items()
                   if k != "sec-websocket-extensions"}
        environ["werkzeug.socket"] = _SockProxy(conn, sock, leftover)
        thread_class = functools.partial(threading.Thread, daemon=True,
                                         name=f"{self.name}-{cid}-reader")
        try:
            conn.ws = simple_websocket.Server(
                environ, ping_interval=self.limits.ping_interval or None,
                max_message_size=self.limits.max_message_bytes,
                thread_class=thread_class, event_class=lambda: conn._event)
        except simple_websocket.ConnectionError:
            raise HttpError(400, "bad websocket handshake") from None
        with self._lock:
            self.connections[cid] = conn
        try:
            conn._serve(self.handler)
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
