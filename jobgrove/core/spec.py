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
_JOB_FIELDS = frozenset({"title", "kind", "node", "params", "tags", "children"})


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a job kind: its accepted types and whether it is required."""

    name: str
    types: tuple[type, ...]
    required: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None


@dataclasses.dataclass(frozen=True)
class KindInfo:
    """What the validator knows of a kind. ``params=None``: not checkable here."""

    name: str
    params: tuple[Param, ...] | None = ()


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
    if kind.params is None:
        return params
    known = {p.name: p for p in kind.params}
    for key in params:
        if key not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise SpecError(f"{path}.{key}", f"unknown parameter for kind {kind.name!r} "
                                             f"(allowed: {allowed})")
    for p in kind.params:
        if p.name not in params:
            if p.required:
                raise SpecError(f"{path}.{p.name}", f"required by kind {kind.name!r}")
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
    return params


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
    if default_node is not None:
        _check_name("--node", default_node, "a node name")
        problem = check_node_name(default_node)
        if problem:
            raise SpecError("--node", f"node {problem}")

    jobs: list[JobSpec] = []
    root_id = new_id()
    # (spec, path, id, parent id, inherited node, depth); iterative, so a deep tree
    # cannot exhaust Python's recursion limit.
    stack: list[tuple[Any, str, str, str | None, str | None, int]] = [
        (spec, "root", root_id, None, default_node, 1)]
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
        if len(jobs) + len(stack) + len(raw_children) + 1 > MAX_JOBS:
            raise SpecError(path, f"tree larger than the limit of {MAX_JOBS} jobs")
        child_ids = tuple(new_id() for _ in raw_children)
        jobs.append(JobSpec(job_id, root_id, parent, node, kind_name, title or kind_name,
                            params, child_ids, depth, path))
        for index in range(len(raw_children) - 1, -1, -1):
            stack.append((raw_children[index], f"{path}.children[{index}]",
                          child_ids[index], job_id, node, depth + 1))
    return jobs, tags
