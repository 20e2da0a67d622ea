"""Log tails kept in Redis: the end of a job's log, stored by its node when the job
ends (``--log-keep-bytes``, in the tree's ``logs`` hash, sent in the same round trip as
the job's outcome, see ``Store.finish_many``) and deleted with the tree. Served when
the node that has the log file is gone.

A stored value is ``<size>:<text>``: the log was ``size`` bytes long when the job
ended, and ``text`` is its end (UTF-8, never starting inside a character), so the
first ``size - len(text.encode())`` bytes were not kept.
"""

from __future__ import annotations

import dataclasses

from jobgrove.messaging.reads import StoreReads
from jobgrove.messaging.redis_errors import translate_errors


@dataclasses.dataclass(frozen=True)
class StoredLog:
    """The kept end of a job's log."""

    #: The log's length in bytes when the job ended.
    size: int
    #: Its last bytes, as text.
    text: str

    @property
    def first(self) -> int:
        """Byte offset of the first kept byte (how many leading bytes were not kept)."""
        return max(0, self.size - len(self.text.encode("utf-8")))


def encode(size: int, text: str) -> str:
    return f"{size}:{text}"


def decode(raw: str | None) -> StoredLog | None:
    """A stored value, or None (nothing stored, or not in the expected shape)."""
    if raw is None:
        return None
    size, sep, text = raw.partition(":")
    if not sep or not size.isdigit():
        return None
    return StoredLog(max(int(size), len(text.encode("utf-8"))), text)


@translate_errors
def read_stored(store: StoreReads, root: str, job_id: str) -> StoredLog | None:
    """The stored end of the log of ``job_id`` (of tree ``root``), if any."""
    return decode(store.client.hget(store.keys.tree_key(root, "logs"), job_id))
