"""The end of a job's log as its node stores it (``JobLog.tail``): the last bytes,
never starting inside a character, from memory or from a file that began earlier."""

from __future__ import annotations

from pathlib import Path

from jobgrove.jobs.log import JobLog
from jobgrove.jobs.tail import read_tail
from jobgrove.messaging.logtails import StoredLog, decode, encode

JOB = "39d4f79d-2196-4d80-9cf8-fe18c4c27618"


def test_tail_is_the_end_of_the_file(tmp_path: Path) -> None:
    log = JobLog(tmp_path, JOB, keep=100)
    for i in range(500):
        log.write(f"line {i} é")
    data = log.path.read_bytes()
    size, text = log.tail() or (0, "")
    assert size == len(data) and data.endswith(text.encode())
    assert 97 <= len(text.encode()) <= 100 and text.encode()[:1] != b"\xa9"
    assert (size, text) == read_tail(log.path, 100)
    assert JobLog(tmp_path, JOB).tail() is None  # keep 0: nothing kept


def test_a_log_that_began_before_is_read_from_its_file(tmp_path: Path) -> None:
    first = JobLog(tmp_path, JOB, keep=1000)
    first.write("x" * 2000)
    first.close()
    again = JobLog(tmp_path, JOB, keep=1000)  # the undo hook appends to the same file
    again.write("undone")
    size, text = again.tail() or (0, "")
    assert size == len(again.path.read_bytes()) and len(text) == 1000
    assert text.endswith("undone\n")


def test_stored_values_read_back() -> None:
    stored = decode(encode(5000, "the end ✓"))
    assert stored == StoredLog(5000, "the end ✓")
    assert stored.first == 5000 - len("the end ✓".encode())
    assert decode(None) is None and decode("garbage") is None
    assert decode(encode(3, "abcdef")) == StoredLog(6, "abcdef")  # never a negative cut
