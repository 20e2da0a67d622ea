"""The built-in job kinds of the contract: noop, sleep, fail, shell."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from jobgrove.core.spec import Param
from jobgrove.errors import JobAbortedError, JobFailedError, LogWriteError
from jobgrove.jobs.api import Job, JobContext, job_kind
from jobgrove.jobs.output import STDERR_MARK
from jobgrove.jobs.reaper import reap_group

#: Seconds a shell job's process group gets between SIGTERM and SIGKILL.
SHELL_GRACE = 5.0
#: Longest duration the built-in kinds take (sleep's ``seconds``, shell's ``timeout``
#: and ``grace``): 31 days. Beyond that a number is more likely a slip than a plan,
#: and near 1e10 s the runtime's timers overflow.
MAX_SECONDS = 31 * 24 * 3600
#: Longest argument, or environment entry (``KEY=VALUE``), of a shell job, in UTF-8
#: bytes: Linux refuses longer ones (MAX_ARG_STRLEN, 128 KiB with the final NUL).
MAX_ARG_BYTES = 128 * 1024 - 1
#: Most bytes a shell job's arguments and ``env`` take together (the node's own
#: environment comes on top, within the system's ARG_MAX, usually 2 MiB).
MAX_ARGS_TOTAL = 1024 * 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _duration(*, positive: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if (value > 0 if positive else value >= 0) and value <= MAX_SECONDS:
            return None
        low = "more than 0 and at most" if positive else "from 0 to"
        return f"must be {low} {MAX_SECONDS} seconds (31 days), got {_show(value)}"

    return check


def _text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an argument or environment string of a process, or None."""
    if "\0" in text:
        return "must not contain a NUL byte (\\u0000)"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ARG_BYTES:
        return f"longer than {MAX_ARG_BYTES} bytes (the system refuses longer arguments)"
    return None


def _env_path(key: str) -> str:
    return f"env.{key}" if _NAME.fullmatch(key) else f"env[{key!r}]"


def _shell_problem(params: dict[str, Any]) -> tuple[str, str] | None:
    """What in a shell job's params cannot run: the command, env and cwd as the
    system will take them (types, emptiness, NUL bytes, sizes)."""
    command = params["command"]
    parts = [("command", command)] if isinstance(command, str) \
        else [(f"command[{i}]", part) for i, part in enumerate(command)]
    if not parts or (isinstance(command, str) and not command.strip()):
        return "command", "must not be empty"
    total = 0
    for where, part in parts:
        if not isinstance(part, str):
            return where, f"must be a string, got {type(part).__name__}"
        problem = _text_problem(part)
        if problem:
            return where, problem
        total += len(part.encode("utf-8", "surrogatepass")) + 1
    if isinstance(command, list) and not command[0]:
        return "command[0]", "must not be empty (it names the program to run)"
    for key, value in params.get("env", {}).items():
        where = _env_path(key)
        if not key:
            return where, "an environment variable needs a name"
        if "=" in key:
            return where, "an environment variable's name must not contain '='"
        if not isinstance(value, str):
            return where, f"must be a string, got {type(value).__name__}"
        problem = _text_problem(key) or _text_problem(f"{key}={value}")
        if problem:
            return where, problem
        total += len(f"{key}={value}".encode("utf-8", "surrogatepass")) + 1
    if total > MAX_ARGS_TOTAL:
        return "", f"command and env take {total} bytes, more than {MAX_ARGS_TOTAL}"
    cwd = params.get("cwd")
    if cwd is not None and (not cwd or "\0" in cwd):
        return "cwd", "must be a directory's path (not empty, no NUL byte)"
    return None


@job_kind("noop")
class Noop(Job):
    """Does nothing and succeeds."""

    params = ()

    def run(self, ctx: JobContext) -> Any:
        return None


@job_kind("sleep")
class Sleep(Job):
    """Sleeps ``seconds`` (stops early, ABORTED, if the tree aborts)."""

    params = (Param("seconds", (int, float), required=True, check=_duration(positive=False)),)

    def run(self, ctx: JobContext) -> Any:
        seconds = float(ctx.params["seconds"])
        ctx.log.info(f"sleeping {seconds:g}s")
        if ctx.wait(seconds):
            raise JobAbortedError("aborted while sleeping")
        return None


@job_kind("fail")
class Fail(Job):
    """Fails at once with ``message``."""

    params = (Param("message", (str,)),)

    def run(self, ctx: JobContext) -> Any:
        message = ctx.params.get("message") or "failed on purpose"
        ctx.log.error(message)
        raise JobFailedError(message)


@job_kind("shell")
class Shell(Job):
    """Runs ``command`` (argv list, or a string for /bin/sh -c); output goes to the log.

    Non-zero exit fails the job with the exit code in its summary; ``timeout`` (s)
    fails it when exceeded; an abort sends SIGTERM to the process group, then SIGKILL
    after ``grace`` seconds (default 5).
    """

    params = (
        Param("command", (list, str), required=True),
        Param("cwd", (str,)),
        Param("env", (dict,)),
        Param("timeout", (int, float), check=_duration(positive=True)),
        Param("grace", (int, float), check=_duration(positive=False)),
    )

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        return _shell_problem(params)

    def stop_grace(self, ctx: JobContext) -> float:
        # SIGTERM, up to ``grace`` seconds, then SIGKILL: give that sequence time to end
        # (and the pipe to drain) before fencing the job off.
        return max(ctx.abort_grace, float(ctx.params.get("grace", SHELL_GRACE)) + 2.0)

    def run(self, ctx: JobContext) -> Any:
        command = ctx.params["command"]
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        env = {**os.environ, **ctx.params.get("env", {})}
        grace = float(ctx.params.get("grace", SHELL_GRACE))
        timeout = ctx.params.get("timeout")
        ctx.log.info(f"$ {' '.join(argv) if isinstance(command, list) else command}")
        try:
            proc = subprocess.Popen(argv, cwd=ctx.params.get("cwd"), env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise JobFailedError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        # stdout and stderr on pipes of their own, so that stderr lines can be marked
        # (the order between the two streams is then the order they were read in).
        readers = [threading.Thread(target=self._pump, args=(pipe, ctx, prefix), daemon=True,
                                    name=f"jobgrove-shell-{ctx.job_id[:8]}")
                   for pipe, prefix in ((proc.stdout, ""), (proc.stderr, STDERR_MARK))]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        outcome = None
        try:
            while proc.poll() is None:
                if ctx.abort_event.wait(0.05):
                    outcome = "aborted"
                    break
                if deadline is not None and time.monotonic() > deadline:
                    outcome = "timeout"
                    break
            if outcome is not None:
                self._stop(proc, grace, ctx)
        finally:
            if proc.poll() is None:  # job code interrupted: never leave the process behind
                self._stop(proc, 0, ctx)
            else:
                self._reap_group(proc, ctx)
            for reader in readers:
                reader.join(timeout=2.0)
        if outcome == "aborted":
            raise JobAbortedError(f"aborted (exit code {proc.returncode})")
        if ctx.log.failure is not None:
            ended = (f"timed out after {ctx.params['timeout']:g}s" if outcome == "timeout"
                     else f"exited with code {proc.returncode}")
            raise JobFailedError(f"{ctx.log.failure} (the command {ended})")
        if outcome == "timeout":
            raise JobFailedError(f"timed out after {ctx.params['timeout']:g}s")
        if proc.returncode != 0:
            raise JobFailedError(f"exit code {proc.returncode}")
        return {"exit_code": 0}

    @staticmethod
    def _pump(pipe: IO[bytes] | None, ctx: JobContext, prefix: str) -> None:
        """Copy one of the command's streams to the log. Once the log cannot be written
        the output is still read to the end, and dropped: a pump that stopped would
        leave the command blocked on a full pipe or killed by SIGPIPE, hiding the
        reason."""
        assert pipe is not None
        with pipe:
            for raw in pipe:
                if ctx.log.failure is None:
                    with contextlib.suppress(LogWriteError):
                        ctx.log.write(prefix + raw.decode("utf-8", "replace").rstrip("\n"))

    @staticmethod
    def _reap_group(proc: subprocess.Popen[bytes], ctx: JobContext) -> None:
        """The shell exited: whatever it left running in its process group (``cmd &``)
        belongs to the job and ends with it — SIGTERM, then SIGKILL after a second.
        Its orphans are this process's children (``reaper``): those that already
        exited are reaped here, or their zombies would keep the group alive."""
        pgid = proc.pid
        reap_group(pgid)
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return  # nothing left
        ctx.log.note("stopping processes the command left running in the background")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            reap_group(pgid)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)
        # (What SIGKILL leaves, the reaper's sweeper collects.)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes], grace: float, ctx: JobContext) -> None:
        def signal_group(sig: int) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

        signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            ctx.log.info(f"still running {grace:g}s after SIGTERM: sending SIGKILL")
            signal_group(signal.SIGKILL)
            proc.wait()
