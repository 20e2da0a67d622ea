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

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> tuple[str, str] | None:
        """Check ``params`` at submit time, once they passed the declared ``params``
        (types, required, each ``Param.check``): return None if they can run, else
        ``(where, problem)``, ``where`` a path inside params ("seconds", "env.HOME",
        "command[2]"; "" for the whole object). The submit is then refused with
        ``SpecError`` naming it (``root.children[0].params.env.HOME: ...``), and
        nothing is stored. Runs in the submitting process (for kinds registered there),
        so it must not depend on the node the job will run on."""
        return None

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
    infos.update({name: KindInfo(name, cls.params, cls.validate_params)
                  for name, cls in _REGISTRY.items()})
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


#: ``ctx.graft``'s way to the store: (spec, the job to graft under) -> new subtree ids.
Grafter = Callable[[Any, str], list[str]]
#: ``ctx.progress``'s way to the store: (fraction, message).
ProgressSink = Callable[[float, "str | None"], None]


def _no_graft(spec: Any, under: str) -> list[str]:
    raise JobgroveError("this job context cannot graft (no store)")


def _no_progress(fraction: float, message: str | None) -> None:
    """Progress outside a node goes nowhere."""


class JobContext:
    """What a running job sees: its params, log, children's results, tree context, abort;
    and what it can do to its tree: ``graft`` jobs, report ``progress``."""

    def __init__(self, *, job_id: str, root: str, node: str, params: dict[str, Any],
                 log: JobLogger, results: dict[str, Any], children: list[str],
                 context: TreeContext, abort_event: threading.Event,
                 abort_grace: float, result: Any = None, parent: str | None = None,
                 attempt: int = 1, retries: int = 0, grafter: Grafter = _no_graft,
                 progress_sink: ProgressSink = _no_progress) -> None:
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
        #: The parent's id (None for the root).
        self.parent = parent
        #: Which attempt this is (1-based), and how many retries the job has in all.
        self.attempt = attempt
        self.retries = retries
        self._grafter = grafter
        self._progress_sink = progress_sink

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

    def graft(self, spec: Any, under: str | None = None) -> list[str]:
        """Add jobs to this tree while it runs: ``spec`` is one subtree (an object, as in
        a submit) or a list of them, put under ``under`` (default: this job's parent,
        which then waits for them too). ``under`` must not have started. Validated like
        a submit (SpecError); refused (RefusedError) if ``under`` started or the tree is
        aborting. Returns the ids of the new subtrees' roots."""
        target = under or self.parent
        if target is None:
            raise JobgroveError("the root has no parent to graft under: pass under=")
        return self._grafter(spec, target)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the job got (0.0 to 1.0), with an optional one-line message:
        shown in status, ``submit --follow`` and the viewer. Calls more often than ten
        times a second are dropped, but for the last one (fraction 1.0)."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be a number from 0 to 1, got "
                             f"{fraction!r}")
        if message is not None and not isinstance(message, str):
            raise ValueError("progress message must be a string")
        self._progress_sink(float(fraction), None if message is None else message[:200])
