"""Job kinds: the ``Job`` base class, the ``@job_kind`` registry and the run context."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from jobgrove.core.spec import KindInfo, Param
from jobgrove.errors import JobAbortedError, JobgroveError
from jobgrove.jobs.output import JobLogger

J = TypeVar("J", bound="type[Job]")


class Job:
    """Subclass and decorate with ``@job_kind("name")``; implement ``run(ctx)``.

    ``run`` returns the job's result (anything JSON can encode; parents read it in
    ``ctx.results``), raises to fail, and should check ``ctx.aborted`` (or call
    ``ctx.check_abort()``) in long loops: once the tree aborts, a job that keeps
    going is fenced off after the node's abort grace and its result is discarded.
    """

    #: The registered name (set by ``@job_kind``).
    kind: ClassVar[str] = ""
    #: Parameters checked at submit time; None accepts any params object.
    params: ClassVar[tuple[Param, ...] | None] = None

    def run(self, ctx: JobContext) -> Any:
        raise NotImplementedError

    def abort(self, ctx: JobContext) -> None:
        """Called (from another thread, keep it quick) when the running job must stop.

        It may come just as ``run`` returns (an abort racing the job's end): make it
        harmless then."""

    def stop_grace(self, ctx: JobContext) -> float:
        """Seconds this job may take to stop once asked to abort, before the node fences
        it off (records it ABORTED and discards what it returns later). Default: the
        node's ``--abort-grace`` (``ctx.abort_grace``)."""
        return ctx.abort_grace

    def on_tree_aborted(self, ctx: JobContext) -> None:
        """Called once, after the tree aborted, on jobs of this kind that had SUCCEEDED.

        Override to undo their work. ``ctx.result`` holds what ``run`` returned.
        """

    @classmethod
    def has_undo(cls) -> bool:
        return cls.on_tree_aborted is not Job.on_tree_aborted


_REGISTRY: dict[str, type[Job]] = {}


def job_kind(name: str) -> Callable[[J], J]:
    """Class decorator registering a ``Job`` subclass under ``name``."""
    if not isinstance(name, str) or not name or not name.isprintable():
        raise JobgroveError(f"invalid job kind name {name!r}")

    def register(cls: J) -> J:
        if not (isinstance(cls, type) and issubclass(cls, Job)):
            raise JobgroveError(f"@job_kind({name!r}) must decorate a Job subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise JobgroveError(f"job kind {name!r} is already registered by "
                                f"{existing.__module__}.{existing.__qualname__}")
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return register


def kind_class(name: str) -> type[Job] | None:
    return _REGISTRY.get(name)


def kind_names() -> list[str]:
    return sorted(_REGISTRY)


def kind_infos(extra: list[str] | tuple[str, ...] = ()) -> dict[str, KindInfo]:
    """What the spec validator knows: every registered kind, plus ``extra`` names
    (kinds advertised by nodes, whose params cannot be checked here)."""
    infos = {name: KindInfo(name, None) for name in extra}
    infos.update({name: KindInfo(name, cls.params) for name, cls in _REGISTRY.items()})
    return infos


class TreeContext:
    """The tree-wide context dict: children add keys, parents read them.

    Reads come from a snapshot taken when the job started; writes go straight to
    the store (``set``), so a parent started later sees them.
    """

    def __init__(self, snapshot: dict[str, Any], writer: Callable[[str, Any], None]) -> None:
        self._data = dict(snapshot)
        self._writer = writer

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def set(self, key: str, value: Any) -> None:
        self._writer(key, value)
        self._data[key] = value

    __setitem__ = set

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)


class JobContext:
    """What a running job sees: its params, log, children's results, tree context, abort."""

    def __init__(self, *, job_id: str, root: str, node: str, params: dict[str, Any],
                 log: JobLogger, results: dict[str, Any], children: list[str],
                 context: TreeContext, abort_event: threading.Event,
                 abort_grace: float, result: Any = None) -> None:
        self.job_id = job_id
        self.root = root
        self.node = node
        self.params = params
        #: The job's log: a standard ``logging.LoggerAdapter`` (``ctx.log.warning``,
        #: ``ctx.log.exception``...). ``print()`` and the ``logging`` module reach the
        #: same log while the job runs (see ``jobgrove.jobs.output``).
        self.log = log
        #: Results of the children, by child id.
        self.results = results
        #: Child ids in spec order (``[ctx.results.get(c) for c in ctx.children]``).
        self.children = children
        self.context = context
        self.abort_event = abort_event
        self.abort_grace = abort_grace
        #: For ``on_tree_aborted``: what ``run`` returned.
        self.result = result
        #: Set by the runtime once ``run`` has returned successfully and the outcome has
        #: gone to the node (the supervisor then forgets the job).
        self.ended = False

    @property
    def aborted(self) -> bool:
        return self.abort_event.is_set()

    def check_abort(self) -> None:
        """Raise JobAbortedError if the tree is aborting."""
        if self.abort_event.is_set():
            raise JobAbortedError("aborted")

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True (early) if an abort was requested."""
        return self.abort_event.wait(seconds)
