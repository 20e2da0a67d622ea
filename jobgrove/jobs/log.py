"""Job log files: one per job under the node's log dir, lines timestamped.

The path is derived from the job id only (``<dir>/<id[:2]>/<id[2:]>.log``), and ids
are checked to be UUIDs first, so no client-supplied text ever becomes a path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobgrove.core.ids import is_job_id
from jobgrove.errors import LogWriteError
from jobgrove.jobs.tail import read_tail, utf8_tail

#: Called with (job id, file size after the write) whenever a log grows.
GrowthListener = Callable[[str, int], None]


def log_path(log_dir: str | os.PathLike[str], job_id: str) -> Path:
    return Path(log_file(log_dir, job_id))


def log_file(log_dir: str | os.PathLike[str], job_id: str) -> str:
    """``<dir>/<id[:2]>/<id[2:]>.log``, for a job id only (never a client's path)."""
    if not is_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return os.path.join(log_dir, job_id[:2], f"{job_id[2:]}.log")


_second: list[Any] = [None, ""]  # (whole second, its formatted prefix), cached


def _stamp() -> str:
    """UTC timestamp with milliseconds, e.g. 2026-11-29T14:25:14.123Z."""
    now = time.time()
    whole = int(now)
    cached = _second
    if cached[0] != whole:
        cached[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
        cached[0] = whole
    return f"{cached[1]}{int((now - whole) * 1000):03d}Z"


_log = logging.getLogger(__name__)
_known_dirs: set[str] = set()
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def _open_append(path: str) -> int:
    """An O_APPEND descriptor: every write lands whole at the end, even across processes."""
    folder = os.path.dirname(path)
    if folder not in _known_dirs:
        os.makedirs(folder, exist_ok=True)
        _known_dirs.add(folder)
    try:
        return os.open(path, _APPEND, 0o644)
    except FileNotFoundError:  # the directory was removed behind our back
        _known_dirs.discard(folder)
        os.makedirs(folder, exist_ok=True)
        return os.open(path, _APPEND, 0o644)


class JobLog:
    """Appends timestamped lines to one job's log file; safe to use from many threads.

    The first write that fails (a full disk, a log dir removed, ...) is remembered in
    ``failure`` and breaks the log: that write and every later one raise
    LogWriteError, and the runtime ends the job FAILED with ``failure`` as its summary,
    so the reason is in the job's record, not only in the node's own log.
    """

    def __init__(self, log_dir: str | os.PathLike[str], job_id: str,
                 on_growth: GrowthListener | None = None, keep: int = 0) -> None:
        self.job_id = job_id
        self.file = log_file(log_dir, job_id)
        self._lock = threading.Lock()
        # Opened on first write, in the job's own thread (not the supervisor's).
        self._file: int | None = None
        self._size = 0
        self._closed = False
        self._on_growth = on_growth
        #: "cannot write the job's log: <reason>" once a write failed, else None.
        self.failure: str | None = None
        #: The unfinished last line of each stream (``stream``), by its line prefix.
        self._partial: dict[str, str] = {}
        #: The last ``keep`` bytes written (at least), for ``tail``: kept in memory, as
        #: reading them back from the file costs more than writing them.
        self._keep = keep
        self._kept = bytearray()
        self._initial = 0  # the file's size when this log opened it

    @property
    def path(self) -> Path:
        return Path(self.file)

    def write(self, text: str) -> None:
        """Write ``text``; each of its lines gets a timestamp."""
        stamp = _stamp()
        lines = text.splitlines() or [""]
        data = "".join(f"{stamp} {line}\n" for line in lines).encode("utf-8", "replace")
        error: OSError | None = None
        with self._lock:
            if self._closed:
                return
            if self.failure is not None:
                raise LogWriteError(self.failure)
            before = self._size
            try:
                if self._file is None:
                    self._file = _open_append(self.file)
                    before = self._size = self._initial = os.fstat(self._file).st_size
                view = memoryview(data)
                while view:  # (a write that fills the disk may take only part of it)
                    written = os.write(self._file, view)
                    self._size += written
                    view = view[written:]
            except OSError as exc:
                error = exc
                self.failure = f"cannot write the job's log: {exc.strerror or exc}"
            size = self._size
            if self._keep and size != before:
                self._kept += data[:size - before]
                if len(self._kept) > self._keep + 65536:
                    del self._kept[:-self._keep]
        if self._on_growth is not None and size != before:
            self._on_growth(self.job_id, size)
        if error is not None:
            _log.error("job %s: %s (%s)", self.job_id, self.failure, self.file)
            raise LogWriteError(str(self.failure)) from error

    def note(self, message: str) -> None:
        """A line the runtime itself writes: never raises (a full disk must not cost
        a job its outcome; ``failure`` records it)."""
        try:
            self.write(message)
        except LogWriteError:
            pass
        except Exception:
            _log.exception("cannot write to the log of job %s", self.job_id)

    def stream(self, text: str, prefix: str = "") -> None:
        """Text written a piece at a time (``print``, ``sys.stderr.write``): each whole
        line goes to the log, after ``prefix``; an unfinished last line waits for the
        rest (or ``close``). Never raises, like ``note``."""
        with self._lock:
            pending = self._partial.get(prefix, "") + text
            *lines, self._partial[prefix] = pending.split("\n")
        if lines:
            self.note("\n".join(prefix + line for line in lines))

    def info(self, message: str) -> None:
        self.write(message)

    def error(self, message: str) -> None:
        self.write(f"ERROR {message}")

    __call__ = write

    def tail(self) -> tuple[int, str] | None:
        """(the log's size, its last ``keep`` bytes as text), or None if ``keep`` is 0:
        what the node stores in Redis when the job ends (``--log-keep-bytes``)."""
        if not self._keep:
            return None
        with self._lock:
            if self._initial and len(self._kept) < self._keep:
                kept = None  # the file began before this log: read its end
            else:
                kept = (self._size, utf8_tail(bytes(self._kept[-self._keep:])))
        return kept if kept is not None else read_tail(self.file, self._keep)

    def close(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, {}
        for prefix, rest in partial.items():
            if rest:
                self.note(prefix + rest)
        with self._lock:
            self._closed = True
            if self._file is not None:
                os.close(self._file)
                self._file = None
