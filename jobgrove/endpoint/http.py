"""HTTP/1.1 as the node endpoint speaks it: request heads in, responses out, and the
limits the server enforces.

Only GET and HEAD without a body are served; everything else is refused before any
handler sees it.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlsplit

from jobgrove.endpoint.wire import MAX_MESSAGE_BYTES

_REASONS = {200: "OK", 101: "Switching Protocols", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Content Too Large", 426: "Upgrade Required",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclasses.dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    peer: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Error')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                 "Connection: close", "Cache-Control: no-store",
                 "X-Content-Type-Options: nosniff"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


class HttpError(Exception):
    """A request refused before any handler saw it: ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_request_head(buf: bytes, limit: int, peer: str) -> tuple[Request, bytes]:
    """An HTTP/1.x request head (up to the blank line) and the bytes after it. Only
    GET and HEAD without a body are served."""
    head, _, leftover = buf.partition(b"\r\n\r\n")
    if len(head) > limit:
        raise HttpError(431, f"request head larger than {limit} bytes")
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(400, "only HTTP/1.x is served")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or len(headers) > 100:
            raise HttpError(400, "malformed header")
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        raise HttpError(405, "only GET and HEAD are served")
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        raise HttpError(413, "request bodies are not accepted")
    parts = urlsplit(target)
    if not target.startswith("/") or "\x00" in target:
        raise HttpError(400, "bad request target")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Request(method, parts.path, query, headers, peer), leftover


@dataclasses.dataclass(frozen=True)
class Limits:
    #: Connections with a thread of their own (HTTP requests and websockets together).
    max_connections: int = 256
    #: Connections of one client address still sending their request head; more go to
    #: the overflow desk like connections past ``max_connections``.
    max_per_address: int = 32
    #: Largest request head (request line + headers) accepted; bodies are refused.
    max_request_bytes: int = 16 * 1024
    max_message_bytes: int = MAX_MESSAGE_BYTES
    ping_interval: float = 20.0
    #: Hard cap of bytes queued for one viewer: past it the viewer is dropped.
    queue_bytes: int = 1 << 20
    #: Log data is only queued while less than this is waiting (flow control).
    queue_high: int = 256 * 1024
    send_timeout: float = 10.0
    #: Seconds from the accept to the end of the request head (a total, not per read).
    header_timeout: float = 10.0
    #: Seconds from the accept until a websocket's handshake answer is written.
    handshake_timeout: float = 15.0
    #: Over the caps: seconds a connection gets to send its request (at most
    #: ``header_timeout``) before it is closed.
    overflow_timeout: float = 2.0
    #: SO_SNDBUF of each connection (None: the OS's autotuning). Smaller bounds kernel
    #: memory per viewer and detects a stalled viewer sooner.
    send_buffer: int | None = None
