"""Tree specs: validation and flattening into job records.

A spec is the JSON structure of the contract (or the same thing as a Python dict).
Validation is complete before anything is stored: the first problem found raises a
SpecError naming the field and its path, e.g. ``root.children[2].params.seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from jobgrove.errors import SpecError

#: Most jobs one tree may hold; larger specs are rejected whole.
MAX_JOBS = 200_000
#: Deepest nesting allowed (the root is depth 1).
MAX_DEPTH = 256
#: Longest title, node name and kind name, in characters.
MAX_NAME = 200
#: Characters a node name may not hold (they would break keys, channels and paths).
NODE_NAME_FORBIDDEN = "/{}"
TAG_KEYS = ("workspace", "application", "version", "instance", "node")
_JOB_FIELDS = frozenset({"title", "kind", "node", "params", "tags", "children", "retries",
                         "retry_delay", "timeout"})
#: Retries a job may have; its first retry waits ``retry_delay`` (default 1 s), each
#: later one twice as long, at most ``MAX_RETRY_DELAY``.
MAX_RETRIES = 100
DEFAULT_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 300.0
#: Longest ``timeout`` a job may have (31 days), in seconds.
MAX_TIMEOUT = 31 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a job kind: its accepted types and whether it is required."""

    name: str
    types: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None


#: A kind's own check of a whole params object, run once its ``Param``s passed: None,
#: or (where, problem), ``where`` a path inside params ("seconds", "env.HOME",
#: "command[2]"; "" for the object itself).
ParamsCheck = Callable[[dict[str, Any]], tuple[str, str] | None]


@dataclasses.dataclass(frozen=True)
class KindInfo:
    """What the validator knows of a kind. ``params=None``: not checkable here.
    ``check``: the kind's own check of its params (``Job.validate_params``)."""

    name: str
    params: tuple[Param, ...] | None = ()
    check: ParamsCheck | None = None


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """One validated job of a tree, flattened (children by id)."""

    id: str
    root: str
    parent: str | None
    node: str
    kind: str
    title: str
    params: dict[str, Any]
    children: tuple[str, ...]
    depth: int
    #: Where it is in the spec (``root.children[1]``), for messages about it.
    path: str = ""
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    #: Seconds the job may run (None: no limit); then it is aborted and FAILED.
    timeout: float | None = None

    def retry_wait(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        return min(self.retry_delay * 2.0 ** (attempt - 1), MAX_RETRY_DELAY)


def _type_names(types: tuple[type, ...]) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string",
             list: "array", dict: "object"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_json(path: str, value: Any) -> None:
    """Refuse anything JSON cannot carry faithfully (sets, bytes, NaN, non-string keys)."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if item is None or isinstance(item, (bool, int, str)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise SpecError(where, "must be a finite number")
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str):
                    raise SpecError(where, f"object keys must be strings, got {key!r}")
                stack.append((f"{where}.{key}", v))
        else:
            raise SpecError(where, f"not a JSON value ({type(item).__name__})")


def check_node_name(value: str) -> str | None:
    """Why ``value`` cannot be a node name, or None. (Nodes and specs share this rule.)"""
    if any(c in value for c in NODE_NAME_FORBIDDEN) or any(c.isspace() for c in value):
        return "must not contain spaces, '/', '{' or '}'"
    return None


def _check_params(path: str, params: Any, kind: KindInfo) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise SpecError(path, f"must be an object, got {type(params).__name__}")
    _check_json(path, params)
    if kind.params is not None:
        _check_declared(path, params, kind.name, kind.params)
    if kind.check is not None:
        try:
            problem = kind.check(params)
        except Exception as exc:  # the kind's own code: its bug is still a clear refusal
            raise SpecError(path, f"kind {kind.name!r} could not check its params "
                                  f"({type(exc).__name__}: {exc})") from exc
        if problem:
            where, text = problem
            raise SpecError(f"{path}.{where}" if where else path, text)
    return params


def _check_declared(path: str, params: dict[str, Any], kind: str,
                    declared: tuple[Param, ...]) -> None:
    known = {p.name: p for p in declared}
    for key in params:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise SpecError(f"{path}.{key}", f"unknown parameter for kind {kind!r} "
                                             f"(allowed: {allowed})")
    for p in declared:
        if p.name not in params:
            if p.required:
                raise SpecError(f"{path}.{p.name}", f"required by kind {kind!r}")
            continue
        value = params[p.name]
        # bool is an int in Python; a JSON true is never a number here.
        if (isinstance(value, bool) and bool not in p.types) or not isinstance(value, p.types):
            raise SpecError(f"{path}.{p.name}",
                            f"must be {_type_names(p.types)}, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{path}.{p.name}", "must be a finite number")
        if p.check is not None:
            problem = p.check(value)
            if problem:
                raise SpecError(f"{path}.{p.name}", problem)


def _check_name(path: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SpecError(path, f"{what} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME or not value.isprintable():
        raise SpecError(path, f"{what} must be 1 to {MAX_NAME} printable characters")
    return value


def _check_tags(path: str, tags: Any) -> dict[str, str]:
    if not isinstance(tags, dict):
        raise SpecError(path, f"must be an object, got {type(tags).__name__}")
    for key, value in tags.items():
        if key not in TAG_KEYS:
            raise SpecError(f"{path}.{key}", f"unknown tag (allowed: {', '.join(TAG_KEYS)})")
        _check_name(f"{path}.{key}", value, "a tag value")
    return dict(tags)


def _number(path: str, value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= high:
        days = f" ({high / 86400:g} days)" if high >= 86400 else ""
        raise SpecError(path, f"{what} must be between {low:,g} and {high:,.0f} seconds"
                              f"{days}, got {value!r}")
    return float(value)


def _attempts(path: str, item: dict[str, Any]) -> tuple[int, float, float | None]:
    """The job's retries, retry_delay and timeout, checked."""
    retries = item.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise SpecError(f"{path}.retries", f"must be an integer, got {type(retries).__name__}")
    if not 0 <= retries <= MAX_RETRIES:
        raise SpecError(f"{path}.retries", f"must be between 0 and {MAX_RETRIES}, "
                                           f"got {retries}")
    delay = _number(f"{path}.retry_delay", item["retry_delay"], 0, MAX_RETRY_DELAY,
                    "retry_delay") if "retry_delay" in item else DEFAULT_RETRY_DELAY
    timeout = None
    if "timeout" in item:
        timeout = _number(f"{path}.timeout", item["timeout"], 0, MAX_TIMEOUT, "timeout")
        if timeout <= 0:
            raise SpecError(f"{path}.timeout", "must be more than 0 seconds")
    return retries, delay, timeout


def _check_default_node(node: str | None, where: str) -> None:
    if node is not None:
        _check_name(where, node, "a node name")
        problem = check_node_name(node)
        if problem:
            raise SpecError(where, f"node {problem}")


def parse_spec(
    spec: Any,
    kinds: Mapping[str, KindInfo],
    *,
    default_node: str | None = None,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> tuple[list[JobSpec], dict[str, str]]:
    """Validate ``spec`` and flatten it: (jobs root first, parents before children; tags).

    ``kinds`` maps each kind name the submitter knows to what it can check of it.
    Raises SpecError on the first problem; nothing partial is returned.
    """
    if not isinstance(spec, dict):
        raise SpecError("root", f"a tree spec must be an object, got {type(spec).__name__}")
    if not spec:
        raise SpecError("root", "empty tree: a spec needs at least a 'kind'")
    tags = _check_tags("root.tags", spec["tags"]) if "tags" in spec else {}
    _check_default_node(default_node, "--node")
    root_id = new_id()
    jobs = _flatten([(spec, "root", root_id, None, default_node, 1)], kinds, root_id,
                    new_id, size=0)
    return jobs, tags


def parse_graft(
    spec: Any,
    kinds: Mapping[str, KindInfo],
    *,
    root: str,
    parent: str,
    parent_node: str,
    parent_depth: int,
    tree_size: int,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[JobSpec]:
    """Validate subtrees to add under ``parent`` (one spec object, or an array of them)
    exactly as a submit would, limits counted on the whole tree: ``tree_size`` jobs it
    has now, ``parent_depth`` the parent's depth. Jobs without a node run on the
    parent's. Returns the new jobs, each subtree's root before its descendants."""
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise SpecError("graft", "nothing to add: give a subtree or a non-empty array")
    work = []
    for index, item in enumerate(items):
        path = f"graft[{index}]" if isinstance(spec, list) else "graft"
        if not isinstance(item, dict):
            raise SpecError(path, f"a job must be an object, got {type(item).__name__}")
        work.append((item, path, new_id(), parent, parent_node, parent_depth + 1))
    return _flatten(list(reversed(work)), kinds, root, new_id, size=tree_size)


# One job to validate: (spec, path, id, parent id, inherited node, depth).
_Work = tuple[Any, str, str, "str | None", "str | None", int]


def _flatten(stack: list[_Work], kinds: Mapping[str, KindInfo], root_id: str,
             new_id: Callable[[], str], size: int) -> list[JobSpec]:
    """Check and flatten jobs depth first (iteratively: a deep tree cannot exhaust
    Python's recursion limit); ``size`` jobs exist already."""
    jobs: list[JobSpec] = []
    while stack:
        item, path, job_id, parent, inherited, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(path, f"tree deeper than the limit of {MAX_DEPTH} levels")
        if not isinstance(item, dict):
            raise SpecError(path, f"a job must be an object, got {type(item).__name__}")
        for key in item:
            if key not in _JOB_FIELDS:
                raise SpecError(f"{path}.{key}", "unknown field (allowed: "
                                + ", ".join(sorted(_JOB_FIELDS)) + ")")
        if "tags" in item and parent is not None:
            raise SpecError(f"{path}.tags", "tags are allowed on the root only")
        if "kind" not in item:
            raise SpecError(f"{path}.kind", "missing (every job needs a kind)")
        kind_name = _check_name(f"{path}.kind", item["kind"], "kind")
        kind = kinds.get(kind_name)
        if kind is None:
            raise SpecError(f"{path}.kind", f"unknown kind {kind_name!r} (known: "
                            + ", ".join(sorted(kinds)) + ")")
        if "node" in item:
            node = _check_name(f"{path}.node", item["node"], "node")
            problem = check_node_name(node)
            if problem:
                raise SpecError(f"{path}.node", f"node {problem}")
        elif inherited is not None:
            node = inherited
        else:
            raise SpecError(f"{path}.node", "missing: give the root a node (or submit --node)")
        title = _check_name(f"{path}.title", item["title"], "title") if "title" in item else ""
        params = _check_params(f"{path}.params", item.get("params", {}), kind)
        raw_children = item.get("children", [])
        if not isinstance(raw_children, list):
            raise SpecError(f"{path}.children",
                            f"must be an array, got {type(raw_children).__name__}")
        retries, retry_delay, timeout = _attempts(path, item)
        if size + len(jobs) + len(stack) + len(raw_children) + 1 > MAX_JOBS:
            raise SpecError(path, f"tree larger than the limit of {MAX_JOBS} jobs")
        child_ids = tuple(new_id() for _ in raw_children)
        jobs.append(JobSpec(job_id, root_id, parent, node, kind_name, title or kind_name,
                            params, child_ids, depth, path, retries, retry_delay, timeout))
        for index in range(len(raw_children) - 1, -1, -1):
            stack.append((raw_children[index], f"{path}.children[{index}]",
                          child_ids[index], job_id, node, depth + 1))
    return jobs
