"""The relay's upstream: one connection per job of another node that a viewer here
follows, mirroring the owning node's log into a spool file."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

from jobgrove.actors.messages import Relay, RelayKind
from jobgrove.endpoint.client import Session, WsError
from jobgrove.endpoint.stored import Fallback
from jobgrove.errors import JobgroveError


class Upstream(threading.Thread):
    """The relay's one connection per job to the node that owns it: mirrors the log
    into a spool file from ``offset`` and tells the log-broadcast actor (``Relay``
    messages) as it grows; reconnects and resumes at the spool's end."""

    def __init__(self, actor: pykka.ActorRef[Any], job: str, node: str, offset: int,
                 spool: Path, gen: int, *, address: Callable[[str], str | None],
                 token: Callable[[], str | None], fallback: Callable[[str, str], Fallback],
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
        self._fallback = fallback
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

    def _tell(self, kind: RelayKind, **fields: Any) -> None:
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
                    if self._instead(exc):
                        return
                finally:
                    self._session = None
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _instead(self, exc: WsError) -> bool:
        """The owning node cannot be reached: serve what Redis kept, or say why not.
        True if that ends this upstream."""
        try:
            instead = self._fallback(self.node, self.job)
        except JobgroveError as err:  # Redis trouble: the node may answer next time
            instead = Fallback("retry", f"({err})")
        if instead.kind == "stored" and instead.log is not None:
            kept = self.spool.with_name(self.spool.name + ".kept")
            try:
                kept.write_bytes(instead.log.text.encode("utf-8"))
            except OSError as err:  # the endpoint is stopping (its spool is gone)
                self._tell(RelayKind.FATAL, error=f"{instead.message}, but: {err}")
                return True
            self._tell(RelayKind.STORED, base=instead.log.first, end=instead.log.size,
                       state=instead.state, path=str(kept), error=instead.message)
        elif instead.kind == "empty":
            self._tell(RelayKind.END, end=0, state=instead.state)
        elif instead.kind == "fatal":
            self._tell(RelayKind.FATAL, error=instead.message)
        else:
            self._tell(RelayKind.DOWN, error=" ".join(filter(None, (
                f"cannot reach node {self.node}, which has the log of job {self.job}: {exc}",
                instead.message))))
            return False
        return True

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
            self._tell(RelayKind.UP)
            while not self._halt.is_set():
                frame = session.receive(timeout=0.5)
                if frame is None or frame.get("job") not in (self.job, None):
                    continue
                kind = frame.get("type")
                # Up once the node has served something: a node that answers every
                # subscription with an error is retried with backoff, not at once.
                self._was_up = self._was_up or kind != "error"
                if kind == "log":
                    self._append(spool, frame)
                elif kind == "live":
                    self._tell(RelayKind.LIVE, end=self.offset)
                elif kind == "end":
                    self._tell(RelayKind.END, end=int(frame.get("offset", 0)),
                               state=str(frame.get("state")))
                    return True
                elif kind == "error":
                    if frame.get("code") == "not_found":
                        self._tell(RelayKind.FATAL, error=f"node {self.node} does not know job "
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
        self._tell(RelayKind.GREW, end=self.offset)
