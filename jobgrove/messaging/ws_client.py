"""Websocket client of the node endpoint (simple-websocket): ``jobgrove logs``, tree
snapshots, and the relay's upstream connection to the node that owns a job."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import pykka
import simple_websocket

from jobgrove.errors import JobgroveError, UnknownJobError

log = logging.getLogger(__name__)

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


def _probe(address: str, timeout: float) -> None:
    # simple-websocket's connect has no timeout; a black-holed host would hang it.
    host, _, port = address.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


class Session:
    """One websocket to a node: send requests, read frames (dicts)."""

    def __init__(self, address: str, token: str | None = None,
                 timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            if not address.startswith(("ws://", "wss://")):
                _probe(address.split("://", 1)[-1].rstrip("/"), timeout)
            self.ws = simple_websocket.Client.connect(
                ws_url(address), headers=headers, thread_class=_daemon_thread)
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


def _raise_for(frame: dict[str, Any], job: str) -> None:
    code, message = frame.get("code", "unavailable"), str(frame.get("message", ""))
    if code == "not_found":
        raise UnknownJobError(job)
    raise WsError(str(code), message)


def stream_log(address: str, job_id: str, follow: bool = False, out: TextIO | None = None,
               token: str | None = None, offset: int = 0,
               notice: Callable[[str], None] | None = None, retries: int = 5) -> str:
    """Write the job's log to ``out`` (stdout) from ``offset``; without ``follow`` stop
    at what it holds now, with it stop once the job is finished. Returns the job's
    state (final when following). Reconnects after a lost connection, resuming at the
    last byte received. Raises UnknownJobError, or WsError (``code``)."""
    out = out or sys.stdout
    notice = notice or (lambda text: print(f"jobgrove: {text}", file=sys.stderr))
    failures = 0
    while True:
        try:
            with Session(address, token) as session:
                session.send({"type": "subscribe", "job": job_id, "offset": offset,
                              "follow": follow})
                for frame in _frames(session):
                    failures = 0
                    kind = frame.get("type")
                    if kind == "log" and frame.get("job") == job_id:
                        data = str(frame.get("data", ""))
                        start = int(frame.get("offset", 0))
                        # After a reconnect, skip bytes already written (none twice).
                        skip = max(0, offset - start)
                        raw = data.encode("utf-8")[skip:]
                        out.write(raw.decode("utf-8", "replace"))
                        out.flush()
                        offset = max(offset, start + len(data.encode("utf-8")))
                    elif frame.get("job") == job_id and (
                            kind == "end" or (kind == "live" and not follow)):
                        return str(frame.get("state"))
                    elif kind == "error":
                        if frame.get("code") == "unavailable" and frame.get("job") == job_id:
                            notice(str(frame.get("message")))
                            continue
                        _raise_for(frame, job_id)
        except WsError as exc:
            if exc.code != "unavailable" or failures >= retries:
                raise
            failures += 1
            notice(f"{exc}; reconnecting")
            time.sleep(min(0.2 * 2**failures, 3.0))


def _frames(session: Session) -> Iterator[dict[str, Any]]:
    while True:
        frame = session.receive(timeout=1.0)
        if frame is not None:
            yield frame


def fetch_tree(address: str, tree_id: str, token: str | None = None,
               timeout: float = 10.0) -> dict[str, Any]:
    """The status JSON of the tree of any job, through a node endpoint."""
    deadline = time.monotonic() + timeout
    with Session(address, token) as session:
        session.send({"type": "watch", "tree": tree_id})
        while time.monotonic() < deadline:
            frame = session.receive(timeout=max(0.05, deadline - time.monotonic()))
            if frame is None:
                continue
            if frame.get("type") == "tree":
                return dict(frame["tree"])
            if frame.get("type") == "error":
                _raise_for(frame, tree_id)
    raise WsError("unavailable", f"no answer from {address} within {timeout}s")


def pick_address(client: Any, job_id: str | None = None) -> str:
    """A reachable node endpoint: the job's own node first (no relay), else any live
    node with an address. ``client`` is a ``jobgrove.Client``."""
    preferred = client.job(job_id)["node"] if job_id else None
    nodes = [n for n in client.nodes() if n.get("alive") and n.get("address")]
    nodes.sort(key=lambda n: n["name"] != preferred)
    for node in nodes:
        try:
            _probe(str(node["address"]), 2.0)
        except (OSError, ValueError):
            continue
        return str(node["address"])
    raise WsError("unavailable", "no node endpoint is reachable (start nodes with --listen, "
                  "or pass --via HOST:PORT)")


def print_log(client: Any, job_id: str, follow: bool = False, via: str | None = None,
              token: str | None = None, out: TextIO | None = None) -> str:
    """``jobgrove logs ID [-f]``: the job's log through ``via`` or a node found in the
    registry (any node serves any job's log). Returns the job's state."""
    return stream_log(via or pick_address(client, job_id), job_id, follow=follow, out=out,
                      token=token)


class Tails:
    """The end of running jobs' logs for ``submit --follow``: one websocket, one
    subscription per job asked for, the last bytes of each kept in memory."""

    KEEP = 16 * 1024

    def __init__(self, client: Any, token: str | None = None) -> None:
        self.client = client
        self.token = token or os.environ.get("JOBGROVE_TOKEN")
        self._session: Session | None = None
        self._retry_at = 0.0
        self._logs: dict[str, bytearray] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, job_id: str, max_bytes: int) -> str | None:
        session = self._connect()
        if session is None:
            return None
        with self._lock:
            if job_id not in self._logs:
                self._logs[job_id] = bytearray()
                try:
                    session.send({"type": "subscribe", "job": job_id, "offset": 0})
                except WsError:
                    return None
            data = bytes(self._logs[job_id][-max_bytes:])
        return data.decode("utf-8", "replace") or None

    def _connect(self) -> Session | None:
        if self._session is not None or time.monotonic() < self._retry_at:
            return self._session
        try:
            self._session = Session(pick_address(self.client), self.token)
        except JobgroveError:
            self._retry_at = time.monotonic() + 2.0
            return None
        self._logs.clear()
        self._thread = threading.Thread(target=self._read, args=(self._session,),
                                        daemon=True, name="jg-tails")
        self._thread.start()
        return self._session

    def _read(self, session: Session) -> None:
        while self._session is session:
            try:
                frame = session.receive(timeout=0.5)
            except WsError:
                self._session = None  # reconnect (and resubscribe) on next use
                return
            if frame is not None and frame.get("type") == "log":
                with self._lock:
                    buf = self._logs.get(str(frame.get("job")))
                    if buf is not None:
                        buf += str(frame.get("data", "")).encode("utf-8")
                        del buf[:-self.KEEP]

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()


def tail_reader(client: Any, token: str | None = None) -> Tails:
    return Tails(client, token)


class Upstream(threading.Thread):
    """The relay's one connection per job to the node that owns it: mirrors the log
    into a spool file from ``offset`` and tells the log-broadcast actor (``Relay``
    messages) as it grows; reconnects and resumes at the spool's end."""

    def __init__(self, actor: pykka.ActorRef[Any], job: str, node: str, offset: int,
                 spool: Path, gen: int, *, address: Callable[[str], str | None],
                 token: Callable[[], str | None], gone: Callable[[str, str], str | None],
                 name: str = "jg-relay") -> None:
        super().__init__(daemon=True, name=f"{name}-{job[:8]}")
        self.actor = actor
        self.job = job
        self.node = node
        self.offset = offset
        self.spool = spool
        self.gen = gen
        self._address = address
        self._token = token
        self._gone = gone
        self._halt = threading.Event()
        self._session: Session | None = None
        self._was_up = False

    def stop(self) -> None:
        self._halt.set()
        session = self._session
        if session is not None:
            session.close()

    def drop(self) -> None:
        """Cut the current connection (as a network failure would); it reconnects."""
        session = self._session
        if session is not None:
            with contextlib.suppress(OSError):
                session.ws.sock.shutdown(socket.SHUT_RDWR)

    def _tell(self, kind: str, **fields: Any) -> None:
        from jobgrove.actors.log_broadcast import Relay

        with contextlib.suppress(pykka.ActorDeadError):
            self.actor.tell(Relay(self.job, self.gen, kind, **fields))

    def run(self) -> None:
        backoff = 0.05
        with open(self.spool, "ab") as spool:
            while not self._halt.is_set():
                try:
                    if self._mirror(spool):
                        return
                    backoff = 0.05
                except WsError as exc:
                    if self._was_up:  # an established connection broke: retry at once
                        self._was_up = False
                        continue
                    reason = None
                    with contextlib.suppress(JobgroveError):
                        reason = self._gone(self.node, self.job)
                    if reason:
                        self._tell("fatal", error=f"{reason}; {self.offset} bytes relayed")
                        return
                    self._tell("down", error=f"log of job {self.job} lives on node "
                               f"{self.node}: {exc}; retrying")
                finally:
                    self._session = None
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _mirror(self, spool: Any) -> bool:
        """One connection's worth of mirroring; True once the log is complete."""
        address = self._address(self.node)
        if not address:
            raise WsError("unavailable", f"node {self.node} has no endpoint address")
        self._session = session = Session(address, self._token())
        try:
            if self._halt.is_set():
                return True
            session.send({"type": "subscribe", "job": self.job, "offset": self.offset})
            self._was_up = True
            self._tell("up")
            while not self._halt.is_set():
                frame = session.receive(timeout=0.5)
                if frame is None or frame.get("job") not in (self.job, None):
                    continue
                kind = frame.get("type")
                if kind == "log":
                    self._append(spool, frame)
                elif kind == "live":
                    self._tell("live", end=self.offset)
                elif kind == "end":
                    self._tell("end", end=int(frame.get("offset", 0)),
                               state=str(frame.get("state")))
                    return True
                elif kind == "error":
                    if frame.get("code") == "not_found":
                        self._tell("fatal", error=f"node {self.node} does not know job "
                                   f"{self.job}")
                        return True
                    raise WsError("unavailable", f"node {self.node}: {frame.get('message')}")
            return True
        finally:
            session.close()

    def _append(self, spool: Any, frame: dict[str, Any]) -> None:
        start = int(frame.get("offset", 0))
        data = str(frame.get("data", "")).encode("utf-8")
        if start > self.offset:
            raise WsError("unavailable", f"gap in the log from node {self.node} "
                          f"(expected offset {self.offset}, got {start})")
        data = data[self.offset - start:]
        if not data:
            return
        spool.write(data)
        spool.flush()
        self.offset += len(data)
        self._tell("grew", end=self.offset)
