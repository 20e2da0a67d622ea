"""Job output where users look for it: what a running Python job prints, writes to
``sys.stderr`` or logs (``ctx.log``, or any logger of the standard ``logging``
module) goes to that job's log.

Routing follows the job, not the process. A context variable holds the log of the job
that the current thread (or asyncio task) works for; the runtime sets it around
``run`` and ``on_tree_aborted``. Once per process (``install``, at ``Node.start``):

* ``sys.stdout`` and ``sys.stderr`` become proxies that write to that log when it is
  set, and to the real stream otherwise; stderr lines are marked ``[stderr] ``;
* a handler on the root logger sends records logged in a job's context to its log
  (records of jobgrove's own loggers stay with the node);
* ``threading.Thread.start`` hands the job's log to threads a job starts, so their
  output lands in the same log. asyncio tasks inherit it by themselves.

So two jobs running at once on one node never mix their output. What is not routed:
writes to the file descriptors themselves (``os.write(1, ...)``, child processes that
inherit stdout: use the ``shell`` kind, or capture their output), and work handed to
threads that already existed before the job (a shared thread pool created outside it).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO, cast

from jobgrove.jobs.log import JobLog

#: The log of the job the current context works for (None: not a job).
current: contextvars.ContextVar[JobLog | None] = contextvars.ContextVar(
    "jobgrove_job_log", default=None)
#: The mark of a line a job wrote to stderr (Python jobs and shell jobs alike).
STDERR_MARK = "[stderr] "
_RUNTIME = "jobgrove"
_formatter = logging.Formatter()
_lock = threading.Lock()


def _text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + _formatter.formatException(record.exc_info)
    if record.stack_info:
        text += "\n" + _formatter.formatStack(record.stack_info)
    return text


def _is_runtime(record: logging.LogRecord) -> bool:
    return record.name == _RUNTIME or record.name.startswith(_RUNTIME + ".")


class _ToCurrentJob(logging.Handler):
    """On the root logger: a record logged in a job's context (by any logger but
    jobgrove's own) goes to that job's log as ``LEVEL logger: message``."""

    def emit(self, record: logging.LogRecord) -> None:
        log = current.get()
        if log is None or _is_runtime(record):
            if not _handled_elsewhere(record, self):
                # Nothing else would show it: what logging does without any handler.
                last = logging.lastResort
                if last is not None and record.levelno >= last.level:
                    last.handle(record)
            return
        log.note(f"{record.levelname} {record.name}: {_text(record)}")


def _handled_elsewhere(record: logging.LogRecord, mine: logging.Handler) -> bool:
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(h is not mine for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


class OutsideJobs(logging.Filter):
    """For the node's own handlers (``jobgrove node`` puts it on its stderr handler):
    drops what job code logs, which goes to the job's log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return current.get() is None or _is_runtime(record)


class _JobRecords(logging.Handler):
    """The handler of ``ctx.log``: each record to the log it names."""

    def emit(self, record: logging.LogRecord) -> None:
        log: JobLog | None = record.__dict__.get("jobgrove_log") or current.get()
        if log is None:
            return  # logged straight to "jobgrove.job", outside any job
        text = _text(record)
        log.note(text if record.levelno == logging.INFO else f"{record.levelname} {text}")


_job_logger = logging.getLogger("jobgrove.job")
_job_logger.propagate = False  # never on the node's stderr, nor the host's handlers
_job_logger.setLevel(logging.DEBUG)
_job_logger.addHandler(_JobRecords())

if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:
    _Adapter = logging.LoggerAdapter  # subscriptable at run time only from Python 3.11


class JobLogger(_Adapter):
    """``ctx.log``: a standard ``logging.LoggerAdapter`` (``debug`` ... ``critical``,
    ``exception``, ``log``) whose records go to the job's log, every level included;
    ``INFO`` lines are written bare, the others after their level (``WARNING disk
    almost full``). ``write(text)`` adds raw lines."""

    def __init__(self, job_log: JobLog) -> None:
        super().__init__(_job_logger, {"jobgrove_log": job_log})
        self.job_log = job_log
        self.job_id = job_log.job_id

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "jobgrove_log": self.job_log}
        return msg, kwargs

    @property
    def path(self) -> Any:
        return self.job_log.path

    @property
    def file(self) -> str:
        return self.job_log.file

    @property
    def failure(self) -> str | None:
        """Why the log could not be written ("cannot write the job's log: ..."), or None."""
        return self.job_log.failure

    def write(self, text: str) -> None:
        """Lines as they are (each gets its timestamp)."""
        self.job_log.write(text)

    __call__ = write

    def note(self, message: str) -> None:
        """A line of the runtime's: never raises."""
        self.job_log.note(message)

    def tail(self) -> tuple[int, str] | None:
        """What the node stores in Redis when the job ends (``JobLog.tail``)."""
        return self.job_log.tail()

    def close(self) -> None:
        self.job_log.close()


class _Stream:
    """``sys.stdout``/``sys.stderr``: to the current job's log, else the real stream."""

    def __init__(self, target: TextIO, prefix: str) -> None:
        self._target = target
        self._prefix = prefix

    def write(self, text: str) -> int:
        log = current.get()
        if log is None:
            return self._target.write(text)
        log.stream(text, self._prefix)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current.get() is None:
            self._target.flush()

    def isatty(self) -> bool:
        return current.get() is None and self._target.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


_thread_start = threading.Thread.start


def _start_in_job(self: threading.Thread) -> None:
    log = current.get()
    if log is not None:
        run = self.run

        def run_for_job() -> None:
            current.set(log)
            run()

        self.run = run_for_job  # type: ignore[method-assign]
    _thread_start(self)


def install() -> None:
    """Route job output (idempotent; the streams are wrapped again if someone replaced
    them since, as pytest does between tests)."""
    with _lock:
        for name, prefix in (("stdout", ""), ("stderr", STDERR_MARK)):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Stream):
                setattr(sys, name, cast(TextIO, _Stream(stream, prefix)))
        root = logging.getLogger()
        if not any(isinstance(h, _ToCurrentJob) for h in root.handlers):
            root.addHandler(_ToCurrentJob())
        threading.Thread.start = _start_in_job  # type: ignore[method-assign]
