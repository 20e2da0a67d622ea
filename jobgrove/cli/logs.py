"""Job logs on the command line, read through any node's websocket endpoint:
``jobgrove logs ID [-f]`` and the log tails under ``submit --follow``."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TextIO

from jobgrove.core.states import FINISHED
from jobgrove.endpoint.client import Session, WsError, probe, raise_for
from jobgrove.errors import JobgroveError


class Writer(Protocol):
    """Where a log is written (a text file, stdout)."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...


#: Seconds ``logs`` without ``-f`` waits for a node's answer before it gives up.
PATIENCE = 20.0


class Final(WsError):
    """An error that ends ``logs`` without ``-f`` at once: the node answered that it
    cannot serve the log (``answered``: it has looked for the copy in Redis too), or
    did not answer at all, so asking it again is no help."""

    def __init__(self, code: str, message: str, answered: bool = False) -> None:
        super().__init__(code, message)
        self.answered = answered


def stream_log(address: str, job_id: str, follow: bool = False, out: Writer | None = None,
               token: str | None = None, offset: int = 0,
               notice: Callable[[str], None] | None = None, retries: int = 5) -> str:
    """Write the job's log to ``out`` (stdout) from ``offset``; without ``follow`` stop
    at what it holds now, with it stop once the job is finished. Returns the job's
    state (final when following). Reconnects after a lost connection, resuming at the
    last byte received (following, after an error frame too). Raises UnknownJobError,
    or WsError (``code``): without ``follow`` within seconds whatever the node does."""
    out = out or sys.stdout
    notice = notice or (lambda text: print(f"jobgrove: {text}", file=sys.stderr))
    failures = 0
    first = offset
    while True:
        try:
            with Session(address, token) as session:
                session.send({"type": "subscribe", "job": job_id, "offset": offset,
                              "follow": follow})
                for frame in _frames(session, None if follow else PATIENCE):
                    kind = frame.get("type")
                    if kind != "error":  # an error frame is no progress: it counts
                        failures = 0
                    job = frame.get("job")  # (frames carry full ids, job_id may be a prefix)
                    if job is not None and not str(job).startswith(job_id):
                        continue
                    if kind == "log":
                        data = str(frame.get("data", ""))
                        start = int(frame.get("offset", 0))
                        # After a reconnect, skip bytes already written (none twice).
                        skip = max(0, offset - start)
                        raw = data.encode("utf-8")[skip:]
                        out.write(raw.decode("utf-8", "replace"))
                        out.flush()
                        offset = max(offset, start + len(data.encode("utf-8")))
                    elif kind == "kept":  # the copy its node stored: from byte "offset"
                        notice(str(frame.get("message")))
                        offset = max(offset, int(frame.get("offset", 0)))
                    elif kind == "end" or (kind == "live" and not follow):
                        return str(frame.get("state"))
                    elif kind == "error":  # ends the subscription
                        if frame.get("code") == "unavailable" and follow:
                            raise WsError("unavailable", str(frame.get("message")))
                        if frame.get("code") == "unavailable":
                            raise Final("unavailable", str(frame.get("message")), True)
                        raise_for(frame, job_id)
        except WsError as exc:
            # Without -f, before anything was written, nothing is retried: the caller
            # falls back to the copy in Redis at once (a node that cannot be reached now
            # is no help in a second either). After some bytes, it resumes from there.
            if exc.code != "unavailable" or failures >= retries or isinstance(exc, Final) \
                    or (not follow and offset == first):
                raise
            failures += 1
            notice(f"{exc}; trying again")
            time.sleep(min(0.2 * 2**failures, 3.0))


def _frames(session: Session, patience: float | None) -> Iterator[dict[str, Any]]:
    heard = time.monotonic()
    while True:
        frame = session.receive(timeout=1.0)
        if frame is not None:
            heard = time.monotonic()
            yield frame
        elif patience is not None and time.monotonic() - heard > patience:
            raise Final("unavailable", f"no answer from node endpoint {session.address} "
                        f"within {patience:g}s")


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
                raise_for(frame, tree_id)
    raise WsError("unavailable", f"no answer from {address} within {timeout}s")


def pick_address(client: Any, job_id: str | None = None) -> str:
    """A reachable node endpoint: the job's own node first (no relay), else any live
    node with an address. ``client`` is a ``jobgrove.Client``."""
    preferred = client.job(job_id)["node"] if job_id else None
    nodes = [n for n in client.nodes() if n.get("alive") and n.get("address")]
    nodes.sort(key=lambda n: n["name"] != preferred)
    for node in nodes:
        try:
            probe(str(node["address"]), 2.0)
        except (OSError, ValueError):
            continue
        return str(node["address"])
    raise WsError("unavailable", "no node endpoint is reachable (start nodes with --listen, "
                  "or pass --via HOST:PORT)")


def print_log(client: Any, job_id: str, follow: bool = False, via: str | None = None,
              token: str | None = None, out: TextIO | None = None) -> str:
    """``jobgrove logs ID [-f]``: the job's log through ``via`` or a node found in the
    registry (any node serves any job's log). Without ``follow``, when no node can
    serve it, the end of the log its node stored in Redis is printed instead, or the
    reason why there is none is raised (WsError). Returns the job's state."""
    written = _Counting(out or sys.stdout)
    try:
        return stream_log(via or pick_address(client, job_id), job_id, follow=follow,
                          out=written, token=token)
    except WsError as exc:
        if follow or exc.code != "unavailable" or written.count \
                or (isinstance(exc, Final) and exc.answered):
            raise
        return print_stored(client, job_id, written, str(exc))


def print_stored(client: Any, job_id: str, out: Writer, why: str) -> str:
    """The copy of the job's log its node stored in Redis; WsError saying why there is
    none (``why``: why no node served the log)."""
    job = client.job(job_id)
    stored = client.stored_log(job_id)
    if stored is None:
        if job["state"] in FINISHED and job["started"] is None:
            return str(job["state"])  # it never ran: its log is empty
        summary = str(job.get("summary") or "")
        if job["state"] not in FINISHED:
            reason = f"it is {job['state']}: its node stores a copy when it ends"
        elif summary.startswith(f"node {job['node']} "):
            reason = f"its node was lost or stopped while it ran ({summary})"
        else:
            reason = "its node stored none (was it run with --log-keep-bytes 0?)"
        raise Final("unavailable", f"{why}; and no copy of the log of job {job_id} is stored "
                    f"in Redis: {reason}")
    cut = (f"the first {stored.first} of its {stored.size} bytes were not kept"
           if stored.first else f"all of its {stored.size} bytes were kept")
    print(f"jobgrove: {why}; this is the end of the log of job {job_id} that node "
          f"{job['node']} stored in Redis when the job ended ({cut})", file=sys.stderr)
    out.write(stored.text)
    out.flush()
    return str(job["state"])


class _Counting:
    """An output that counts what was written through it."""

    def __init__(self, out: Writer) -> None:
        self.out = out
        self.count = 0

    def write(self, text: str) -> int:
        self.count += len(text)
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


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
