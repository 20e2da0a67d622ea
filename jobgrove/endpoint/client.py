"""The websocket client of the node endpoint (simple-websocket): one ``Session`` to a
node. The relay (``relay.py``) and the command line (``jobgrove logs``, ``submit
--follow``) both talk to nodes through it."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

import simple_websocket

from jobgrove.errors import JobgroveError, UnknownJobError

CONNECT_TIMEOUT = 5.0


class WsError(JobgroveError):
    """An error frame or a failed connection; ``code`` is the contract's error code
    (``unavailable`` when the node cannot be reached)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def ws_url(address: str) -> str:
    """``ws://host:port/ws`` for a node address (``host:port``, or a ws:// URL)."""
    if address.startswith(("ws://", "wss://")):
        return address
    if address.startswith(("http://", "https://")):
        address = address.split("://", 1)[1].rstrip("/")
    return f"ws://{address}/ws"


def probe(address: str, timeout: float) -> None:
    """Connect and close: raises OSError/ValueError if ``host:port`` is unreachable."""
    # simple-websocket's connect has no timeout; a black-holed host would hang it.
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


class _Client(simple_websocket.Client):  # type: ignore[misc]  # (untyped library)
    """simple-websocket's client with a deadline on its opening handshake: a frozen
    node process still accepts connections (the kernel does), but never answers."""

    def __init__(self, url: str, timeout: float, **kwargs: Any) -> None:
        self._handshake_timeout = timeout
        super().__init__(url, **kwargs)

    def handshake(self) -> None:
        self.sock.settimeout(self._handshake_timeout)
        try:
            super().handshake()
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(None)  # from here on its reader thread blocks on purpose


class Session:
    """One websocket to a node: send requests, read frames (dicts). Connecting to a
    ``host:port`` address, and the opening handshake, each give up after ``timeout``
    seconds (a ``ws://`` URL is connected to without that first deadline)."""

    def __init__(self, address: str, token: str | None = None,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            if not address.startswith(("ws://", "wss://")):
                probe(address.split("://", 1)[-1].rstrip("/"), timeout)
            self.ws = _Client(ws_url(address), timeout, headers=headers,
                              thread_class=_daemon_thread)
        except simple_websocket.ConnectionError as exc:
            status = exc.status_code
            code = "unauthorized" if status in (401, 403) else "unavailable"
            raise WsError(code, f"node endpoint {address} refused the connection "
                          f"(HTTP {status})") from None
        except (OSError, ValueError) as exc:
            raise WsError("unavailable", f"cannot reach node endpoint {address}: "
                          f"{exc}") from None

    def send(self, request: dict[str, Any]) -> None:
        try:
            self.ws.send(json.dumps(request))
        except (simple_websocket.ConnectionClosed, OSError) as exc:
            raise WsError("unavailable", f"connection to {self.address} lost: {exc}") from None

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next frame, None on timeout; raises WsError once the connection is gone."""
        try:
            data = self.ws.receive(timeout=timeout)
        except (simple_websocket.ConnectionClosed, OSError) as exc:
            raise WsError("unavailable", f"connection to {self.address} lost: {exc}") from None
        if data is None:
            if not self.ws.connected:
                raise WsError("unavailable", f"connection to {self.address} lost")
            return None
        frame = json.loads(data)
        return frame if isinstance(frame, dict) else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def raise_for(frame: dict[str, Any], job: str) -> None:
    """Raise what an error frame about ``job`` means (UnknownJobError or WsError)."""
    code, message = frame.get("code", "unavailable"), str(frame.get("message", ""))
    if code == "not_found":
        raise UnknownJobError(job)
    raise WsError(str(code), message)
