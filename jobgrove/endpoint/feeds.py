"""Per-job log feeds of the log-broadcast actor: one log file read at byte offsets, and
how far each of its viewers has got.

A ``Feed`` serves a job's log from a file: the job's own log file for a job of this
node, or a spool file that the relay's ``Upstream`` mirrors from the owning node. Each
viewer (``Subscription``) has its own offset and is fed only while its send queue has
room (``Connection.room``), so a slow viewer just lags on its own and replays of any
length cost no memory; chunks read at the same offset are encoded once and the same
bytes queued to every viewer there. ``GrowthGate`` is how job threads say a local log
grew. Everything here runs in the actor's thread, except ``GrowthGate.notify``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from jobgrove.actors.messages import LogGrew, Viewer
from jobgrove.endpoint import wire
from jobgrove.endpoint.relay import Upstream

CHUNK = 64 * 1024


class GrowthGate:
    """The ``on_log_growth`` side: called in job threads on every log write, it tells
    the actor only about jobs someone watches, and coalesces bursts into one message."""

    def __init__(self) -> None:
        self.actor: pykka.ActorRef[Any] | None = None
        # Replaced whole (never mutated) by the actor, read by job threads: a reader
        # always sees one consistent set.
        self._interesting: frozenset[str] = frozenset()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def notify(self, job: str, size: int) -> None:
        if job not in self._interesting or self.actor is None:
            return
        with self._lock:
            first = job not in self._sizes
            self._sizes[job] = max(size, self._sizes.get(job, 0))
        if first:
            with contextlib.suppress(pykka.ActorDeadError):
                self.actor.tell(LogGrew(job))

    def watch(self, jobs: frozenset[str]) -> None:
        """The local jobs someone watches now (from the actor)."""
        self._interesting = jobs

    def take(self, job: str) -> int:
        with self._lock:
            return self._sizes.pop(job, 0)


@dataclasses.dataclass
class Subscription:
    """One viewer of a feed: the next byte it gets, and whether it follows past
    ``live``."""

    conn: Viewer
    offset: int
    follow: bool
    live_sent: bool = False


@dataclasses.dataclass
class Feed:
    job: str
    root: str
    node: str
    path: Path
    local: bool
    base: int = 0
    end: int = 0
    fd: int | None = None
    final: str | None = None  # finished state, once every byte is known
    final_end: int | None = None  # relay: the owner's final offset
    live: bool = False  # relay: the upstream has caught up with the owner
    state: str = ""
    subs: dict[int, Subscription] = dataclasses.field(default_factory=dict)
    upstream: Upstream | None = None
    gen: int = 0
    idle_since: float | None = None
    #: Relay: when the owning node last sent something (or the feed began).
    heard_at: float = dataclasses.field(default_factory=time.monotonic)
    #: Served from the copy stored in Redis: (first kept byte, why) (``use_stored``).
    kept: tuple[int, str] | None = None

    def open(self) -> bool:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return False
        return True

    def size_now(self) -> int:
        return os.fstat(self.fd).st_size if self.open() and self.fd is not None else 0

    def close(self) -> None:
        self._let_go(unlink=not self.local)

    def _let_go(self, unlink: bool) -> None:
        """Stop the upstream, close the file; ``unlink``: remove it (a relay's spool)."""
        if self.upstream is not None:
            self.upstream.stop()
            self.upstream = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if unlink:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def use_stored(self, path: Path, base: int, end: int, state: str, why: str) -> None:
        """Serve the end of the log its node stored in Redis (``path`` holds the bytes
        from ``base`` to ``end``): the job is over. Viewers behind ``base`` are told
        what was not kept and go on from there."""
        self._let_go(unlink=True)
        self.path, self.base, self.end, self.state = path, base, end, state
        self.final, self.final_end, self.kept = state, end, (base, why)
        self.open()
        for sub in self.subs.values():
            self.note_kept(sub)

    def note_kept(self, sub: Subscription) -> None:
        """Tell a viewer of a stored copy what it gets (and how much was not kept)."""
        if self.kept is None:
            return
        first, why = self.kept
        missing = max(0, first - sub.offset)
        cut = (f"; the first {first} of its {self.end} bytes were not kept" if first
               else f"; all of its {self.end} bytes were kept")
        sub.conn.push(wire.kept_frame(self.job, first, self.end, missing, why + cut))
        sub.offset = max(sub.offset, first)

    def finish_local(self, state: str) -> None:
        # The job wrote its last line before its state changed, so the size is final.
        self.state = state
        self.end = max(self.end, self.size_now())
        self.final = state

    def pump(self) -> list[int]:
        """Send every viewer what its queue takes now, then ``live``/``end`` where due.
        Returns the connection ids whose subscription is over (removed from ``subs``)."""
        cache: dict[int, tuple[int, bytes]] = {}
        over = []
        for cid, sub in list(self.subs.items()):
            conn = sub.conn
            while sub.offset < self.end and self.fd is not None:
                if conn.room() <= 0:
                    break
                got = cache.get(sub.offset)
                if got is None:
                    got = self._read(sub.offset)
                    if got is None:
                        break
                    cache[sub.offset] = got
                if not conn.push(got[1]):
                    break
                sub.offset += got[0]
            if conn.closed:
                continue
            if self._settle(sub):
                self.subs.pop(cid, None)
                over.append(cid)
        return over

    def error(self, code: str, message: str, only: list[int] | None = None) -> list[int]:
        """An error frame ends a subscription: send it to the viewers ``only`` (default:
        all of them) and drop them; returns their connection ids."""
        frame = wire.error_frame(code, message, job=self.job)
        ended = list(self.subs) if only is None else only
        for cid in ended:
            sub = self.subs.pop(cid, None)
            if sub is not None:
                sub.conn.push(frame)
        return ended

    def _read(self, offset: int) -> tuple[int, bytes] | None:
        assert self.fd is not None
        want = min(CHUNK, self.end - offset)
        data = os.pread(self.fd, want, offset - self.base)
        if not data:
            return None
        if self.final is None or offset + len(data) < self.end:
            # Never split a character; its remaining bytes come with the next write.
            cut = wire.utf8_cut(data)
            if cut == 0:
                return None
            data = data[:cut]
        return len(data), wire.log_frame(self.job, offset, data)

    def _settle(self, sub: Subscription) -> bool:
        """Send ``live``/``end`` once due; True when the subscription is over."""
        caught_up = sub.offset >= self.end
        if caught_up and self.final is not None:
            sub.conn.push(wire.end_frame(self.job, self.final, self.end))
            return True
        if caught_up and not sub.live_sent and (self.local or self.live):
            sub.live_sent = True
            sub.conn.push(wire.live_frame(self.job, sub.offset, self.state))
            return not sub.follow
        return False
