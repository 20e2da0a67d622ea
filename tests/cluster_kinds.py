"""Job kinds the node processes of the cluster tests run (registered when
``tests.cluster`` is imported, as the nodes do with ``--import tests.cluster``), and
``runs``, which reads what the marking kinds wrote. Keep it free of pytest."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobgrove import Job, JobAbortedError, JobContext, JobFailedError, job_kind


# -- job kinds for the node processes ---------------------------------------------------
@job_kind("jgc-gate")
class Gate(Job):
    """Waits until the file ``path`` exists (abort-aware), then fails if ``fail``."""

    def run(self, ctx: JobContext) -> Any:
        path = Path(ctx.params["path"])
        ctx.log.info(f"waiting for {path}")
        while not path.exists():
            if ctx.wait(0.005):
                raise JobAbortedError("aborted at the gate")
        if ctx.params.get("fail"):
            raise JobFailedError("failed on purpose at the gate")
        return {"node": ctx.node}


@job_kind("jgc-mark")
class Mark(Job):
    """Appends ``<mark> <pid>`` to ``params.path`` (one line per run: tests count runs),
    then sleeps ``params.seconds`` (abort-aware)."""

    def run(self, ctx: JobContext) -> Any:
        line = f"{ctx.params['mark']} {os.getpid()}\n".encode()
        fd = os.open(ctx.params["path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if ctx.wait(float(ctx.params.get("seconds", 0))):
            raise JobAbortedError("aborted while marking")
        return {"pid": os.getpid()}


@job_kind("jgc-flaky")
class Flaky(Job):
    """Appends ``<mark> <pid> <time>`` to ``params.path`` and fails while it has run at
    most ``params.fail`` times (so it succeeds on run ``fail + 1``)."""

    def run(self, ctx: JobContext) -> Any:
        path = Path(ctx.params["path"])
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{ctx.params['mark']} {os.getpid()} {time.time():.3f}\n")
        done = sum(1 for line in path.read_text().splitlines()
                   if line.split()[0] == ctx.params["mark"])
        if done <= int(ctx.params.get("fail", 0)):
            raise JobFailedError(f"flaky failure number {done}")
        return {"runs": done}


@job_kind("jgc-grafter")
class Grafter(Job):
    """Grafts ``params.spec`` under ``params.under`` (default: its parent; ``"root"``:
    the root of its tree)."""

    def run(self, ctx: JobContext) -> Any:
        under = ctx.params.get("under")
        return {"grafted": ctx.graft(ctx.params["spec"],
                                     under=ctx.root if under == "root" else under)}


@job_kind("jgc-stubborn")
class Stubborn(Job):
    """Sleeps ``params.seconds`` and ignores aborts (a job the node must fence off)."""

    def run(self, ctx: JobContext) -> Any:
        time.sleep(float(ctx.params["seconds"]))
        return None


@job_kind("jgc-progress")
class Progress(Job):
    """Reports half way, waits for the file ``params.path``, returns ``params.result``."""

    def run(self, ctx: JobContext) -> Any:
        ctx.progress(0.5, "half way")
        gate = Path(ctx.params["path"])
        while not gate.exists():
            if ctx.wait(0.01):
                raise JobAbortedError("aborted at the gate")
        ctx.progress(1.0, "done")
        return ctx.params.get("result")


@job_kind("jgc-collect")
class Collect(Job):
    """Returns what its children returned (to check they reach the parent)."""

    def run(self, ctx: JobContext) -> Any:
        return {"children": [ctx.results.get(c) for c in ctx.children]}


def runs(path: Path) -> dict[str, list[int]]:
    """What ``jgc-mark`` jobs wrote to ``path``: mark -> pids of the runs."""
    out: dict[str, list[int]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            mark, pid = line.split()[:2]
            out.setdefault(mark, []).append(int(pid))
    return out


@job_kind("jgc-undoable")
class Undoable(Job):
    """Succeeds at once; its undo hook appends ``<job id> <node>`` to ``params.marker``."""

    def run(self, ctx: JobContext) -> Any:
        return {"node": ctx.node}

    def on_tree_aborted(self, ctx: JobContext) -> None:
        with open(ctx.params["marker"], "a", encoding="utf-8") as out:
            out.write(f"{ctx.job_id} {ctx.node}\n")


@job_kind("jgc-chatter")
class Chatter(Job):
    """Writes through every channel job code has (print, sys.stderr, the logging module
    from the job's thread and from a thread it starts, ctx.log at every level), tagged
    with ``params.me``, in ``params.rounds`` rounds kept in step with the sibling
    ``params.other`` through files in ``params.dir``: two of them run interleaved."""

    def run(self, ctx: JobContext) -> Any:
        me, other, folder = ctx.params["me"], ctx.params["other"], Path(ctx.params["dir"])
        log = logging.getLogger("tests.chatter")
        for i in range(int(ctx.params.get("rounds", 5))):
            (folder / f"{me}-{i}").touch()
            print(f"print {me} {i}")
            print(f"partial {me} {i}", end="", flush=True)
            print(" rest")
            sys.stderr.write(f"stderr {me} {i}\n")
            log.warning("module logger %s %d", me, i)
            logging.info("root logger %s %d", me, i)
            helper = threading.Thread(target=lambda i=i: (
                print(f"thread {me} {i}"), log.info("thread-log %s %d", me, i)))
            helper.start()
            helper.join()
            ctx.log.debug(f"ctx-debug {me} {i}")
            ctx.log.warning("ctx-warning %s %d", me, i)
            while not (folder / f"{other}-{i}").exists():
                if ctx.wait(0.002):
                    raise JobAbortedError("aborted while chatting")
        try:
            raise ValueError(f"boom {me}")
        except ValueError:
            ctx.log.exception("caught %s", me)
        return None
