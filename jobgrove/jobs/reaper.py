"""The node reaps the processes its jobs leave behind.

A shell job's command runs in a session and process group of its own. When the shell
exits, or is killed on abort, the processes it started are orphaned, and the kernel
re-parents them to the nearest *child subreaper*, else to PID 1. Until that parent
reaps them they stay zombies, and a zombie still counts as a member of its process
group: the shell kind, which waits for the job's group to be empty, used to wait for
PID 1 (up to its one-second limit; some PID 1s never reap at all).

So a node makes its process a child subreaper (Linux: prctl PR_SET_CHILD_SUBREAPER;
elsewhere nothing changes), and reaps the orphans it gets, never a child that some
code of this process waits for itself (``subprocess.Popen.wait`` would then report
exit status 0 for it):

- ``reap_group(pgid)``, called by the shell kind once it has waited for the shell:
  every remaining member of the job's group is then an adopted orphan, since no child
  forked here can be in another session's group.
- the sweeper, a thread that looks every ``SWEEP_INTERVAL`` seconds whether a child
  has exited, and reaps the exited children that provably were not forked here: a
  process's session is the one it was forked in, or one of its own (``setsid``), so
  a child forked here has this process's session or its own pid as session id;
  anything else was adopted (a job's process that left the job's group).

Orphans that stayed in this process's session or started a session of their own look
like children forked here, and are left alone (they stay zombies until the process
exits). Job processes seldom do either; the group and session of a shell job are
what this is for.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
#: Seconds between the sweeper's looks for exited children.
SWEEP_INTERVAL = 2.0

_lock = threading.Lock()
_sweeper: threading.Thread | None = None
#: One sweep at a time (held across a sweep; tests hold it to keep the sweeper out).
sweeping = threading.RLock()


def become_subreaper() -> bool:
    """Make this process a child subreaper; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def adopt_orphans() -> bool:
    """Become a child subreaper and start the sweeper, once per process (nodes of one
    process share them). False if this system has no subreapers."""
    global _sweeper
    with _lock:
        if _sweeper is not None:
            return True
        if not become_subreaper():
            log.info("cannot become a child subreaper here: processes that jobs leave "
                     "behind are reaped by PID 1")
            return False
        _sweeper = threading.Thread(target=_sweep_forever, daemon=True,
                                    name="jobgrove-reaper")
        _sweeper.start()
        return True


def reap_group(pgid: int) -> int:
    """Reap the exited children in process group ``pgid``; how many. Only for a group
    whose leader was forked here and has been waited for (see the module doc)."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped += 1


def sweep() -> int:
    """Reap the exited children this process adopted (see the module doc); how many."""
    me = os.getpid()
    own_session = os.getsid(0)
    reaped = 0
    with sweeping:
        for pid in _children(me):
            stat = _stat(pid)
            if stat is None or stat[0] != "Z" or stat[2] in (pid, own_session):
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_INTERVAL)
        try:
            # A look that reaps nothing (WNOWAIT) first: most of the time no child has
            # exited, and then there is nothing to read in /proc.
            if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                continue
        except ChildProcessError:
            continue  # no children at all
        try:
            sweep()
        except Exception:  # never let the sweeper die: orphans would pile up
            log.exception("reaping adopted processes failed")


def _children(me: int) -> set[int]:
    """Pids whose parent is this process (any of its threads)."""
    pids: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{me}/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/{me}/task/{tid}/children", encoding="ascii") as f:
                pids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            return _children_by_scan(me)  # a kernel without /proc/*/task/*/children
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return pids


def _children_by_scan(me: int) -> set[int]:
    pids: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == me:
                pids.add(int(entry))
    return pids


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, session id) of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None
