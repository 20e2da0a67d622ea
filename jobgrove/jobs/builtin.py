"""The built-in job kinds of the contract: noop, sleep, fail, shell."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import IO, Any

from jobgrove.core.spec import Param
from jobgrove.errors import JobAbortedError, JobFailedError
from jobgrove.jobs.api import Job, JobContext, job_kind
from jobgrove.jobs.output import STDERR_MARK

#: Seconds a shell job's process group gets between SIGTERM and SIGKILL.
SHELL_GRACE = 5.0


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def _command(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value.strip() else "must not be empty"
    if not value:
        return "must not be empty"
    if not all(isinstance(part, str) for part in value):
        return "must be a list of strings"
    return None


def _env(value: Any) -> str | None:
    if all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    return "must map strings to strings"


@job_kind("noop")
class Noop(Job):
    """Does nothing and succeeds."""

    params = ()

    def run(self, ctx: JobContext) -> Any:
        return None


@job_kind("sleep")
class Sleep(Job):
    """Sleeps ``seconds`` (stops early, ABORTED, if the tree aborts)."""

    params = (Param("seconds", (int, float), required=True, check=_non_negative),)

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
        Param("command", (list, str), required=True, check=_command),
        Param("cwd", (str,)),
        Param("env", (dict,), check=_env),
        Param("timeout", (int, float), check=_positive),
        Param("grace", (int, float), check=_non_negative),
    )

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
        if outcome == "timeout":
            raise JobFailedError(f"timed out after {ctx.params['timeout']:g}s")
        if proc.returncode != 0:
            raise JobFailedError(f"exit code {proc.returncode}")
        return {"exit_code": 0}

    @staticmethod
    def _pump(pipe: IO[bytes] | None, ctx: JobContext, prefix: str) -> None:
        assert pipe is not None
        with pipe:
            for raw in pipe:
                ctx.log.write(prefix + raw.decode("utf-8", "replace").rstrip("\n"))

    @staticmethod
    def _reap_group(proc: subprocess.Popen[bytes], ctx: JobContext) -> None:
        """The shell exited: whatever it left running in its process group (``cmd &``)
        belongs to the job and ends with it — SIGTERM, then SIGKILL after a second."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return  # nothing left
        ctx.log.note("stopping processes the command left running in the background")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

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
