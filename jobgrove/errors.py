"""One error hierarchy: every error jobgrove raises on purpose is a JobgroveError."""

from __future__ import annotations


class JobgroveError(Exception):
    """Base class of every error raised by jobgrove."""


class SpecError(JobgroveError, ValueError):
    """A tree spec is invalid. ``path`` names where in the tree, e.g. ``root.children[1].kind``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class UnknownJobError(JobgroveError, KeyError):
    """No job or tree with this id is stored."""

    def __init__(self, job_id: str, hint: str = "") -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.hint = hint

    def __str__(self) -> str:
        return f"unknown job id {self.job_id!r}" + (f" ({self.hint})" if self.hint else "")


class AmbiguousIdError(JobgroveError):
    """An id prefix that several jobs share; ``candidates`` lists (some of) them."""

    def __init__(self, prefix: str, candidates: list[str], more: bool = False) -> None:
        super().__init__(
            f"id prefix {prefix!r} is ambiguous: " + ("more than " if more else "")
            + f"{len(candidates)} job ids start with it: " + ", ".join(candidates)
            + " (give more characters)")
        self.prefix = prefix
        self.candidates = candidates


class UnknownNodeError(JobgroveError):
    """A spec assigns a job to a node that never registered."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            "unknown node(s): " + ", ".join(sorted(names))
            + " (no such node ever registered; pass --allow-unknown-node to submit anyway)"
        )
        self.names = names


class ConfigError(JobgroveError, ValueError):
    """A node setting that cannot be used; the message names the setting."""


class RefusedError(JobgroveError):
    """The operation is not allowed on the tree as it is now (a graft under a job that
    has started, a rerun while jobs run...); nothing was changed."""


class FencedError(JobgroveError):
    """This node process lost its node name to another process (its lease lapsed and
    a newer process registered): Redis refuses its claims and outcomes."""


class NodeNameInUseError(JobgroveError):
    """Another live process already runs a node under this name."""


class StoreUnavailableError(JobgroveError):
    """Redis cannot be reached (connection refused, timed out, or went away)."""


class CorruptRecordError(JobgroveError):
    """A value read from Redis does not have the expected shape."""


class JobAbortedError(JobgroveError):
    """Raised inside job code by ``ctx.check_abort()`` once the tree is aborting."""


class JobFailedError(JobgroveError):
    """Raised by job code to fail with a clean one-line summary (no traceback in the log)."""


class LogWriteError(JobFailedError):
    """A job's log cannot be written (a full disk, ...). Raised by ``ctx.log`` writes;
    the job ends FAILED with this reason even if its code catches it."""


class WaitTimeoutError(JobgroveError, TimeoutError):
    """``Client.wait`` gave up before the tree finished."""


class BadRedisURLError(ConfigError):
    """A Redis URL that cannot be used (malformed, or naming a database the server does
    not have); the one-line message names what is wrong, never the password."""


class TreeBusyError(JobgroveError):
    """A tree cannot be deleted now: a job of it is running, or it is not done."""


class NodeBusyError(JobgroveError):
    """A node cannot be forgotten: a live process holds its name, or it has jobs that
    are running or still to run."""
