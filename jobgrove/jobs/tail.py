"""The end of a job's log, which its node stores in Redis with the outcome when the job
ends (``--log-keep-bytes``): served once the node is gone. ``JobLog.tail`` keeps it in
memory as it writes; ``read_tail`` reads it from the file when that began earlier."""

from __future__ import annotations

import os


def read_tail(path: str | os.PathLike[str], keep: int) -> tuple[int, str] | None:
    """(size of the log in bytes, its last ``keep`` bytes as text), or None when
    nothing is to be kept (``keep`` 0) or there is no log. The text never starts
    inside a character: up to three more leading bytes are left out for that."""
    if keep <= 0:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - keep)
        data = os.pread(fd, size - start, start)
    except OSError:
        return None
    finally:
        os.close(fd)
    return start + len(data), utf8_tail(data)


def utf8_tail(data: bytes) -> str:
    """The end of a log as text, leaving out (up to three) leading bytes of a character
    that began before it."""
    skip = 0
    while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:
        skip += 1
    return data[skip:].decode("utf-8", "replace")
