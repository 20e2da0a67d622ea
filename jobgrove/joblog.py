"""Job log files: one per job under the node's log dir, lines timestamped.

The path is derived from the job id only (``<dir>/<id[:2]>/<id[2:]>.log``), and ids
are checked to be UUIDs first, so no client-supplied text ever becomes a path.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Called with (job id, file size after the write) whenever a log grows.
GrowthListener = Callable[[str, int], None]


_JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_job_id(value: object) -> bool:
    """True for a canonical (lower-case) UUID string, the only shape a job id takes."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def log_path(log_dir: str | os.PathLike[str], job_id: str) -> Path:
    if not is_job_id(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return Path(log_dir) / job_id[:2] / f"{job_id[2:]}.log"


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


_known_dirs: set[Path] = set()


def _open_append(path: Path) -> int:
    """An O_APPEND descriptor: every write lands whole at the end, even across processes."""
    if path.parent not in _known_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        _known_dirs.add(path.parent)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:  # the directory was removed behind our back
        _known_dirs.discard(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


class JobLog:
    """Appends timestamped lines to one job's log file; safe to use from many threads."""

    def __init__(self, log_dir: str | os.PathLike[str], job_id: str,
                 on_growth: GrowthListener | None = None) -> None:
        self.job_id = job_id
        self.path = log_path(log_dir, job_id)
        self._lock = threading.Lock()
        # Opened on first write, in the job's own thread (not the supervisor's).
        self._file: int | None = None
        self._closed = False
        self._on_growth = on_growth

    def write(self, text: str) -> None:
        """Write ``text``; each of its lines gets a timestamp."""
        stamp = _stamp()
        lines = text.splitlines() or [""]
        data = "".join(f"{stamp} {line}\n" for line in lines).encode("utf-8", "replace")
        with self._lock:
            if self._closed:
                return
            if self._file is None:
                self._file = _open_append(self.path)
            os.write(self._file, data)
            size = os.lseek(self._file, 0, os.SEEK_CUR)
        if self._on_growth is not None:
            self._on_growth(self.job_id, size)

    def info(self, message: str) -> None:
        self.write(message)

    def error(self, message: str) -> None:
        self.write(f"ERROR {message}")

    __call__ = write

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                os.close(self._file)
                self._file = None
