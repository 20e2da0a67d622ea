"""Tree spec validation and flattening (pure core, no Redis)."""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobgrove.core import spec as spec_module
from jobgrove.core.spec import (
    MAX_DEPTH,
    MAX_JOBS,
    MAX_NAME,
    JobSpec,
    KindInfo,
    parse_spec,
)
from jobgrove.jobs.api import kind_infos
from tests.spec_helpers import rejected


@pytest.fixture(scope="module")
def kinds() -> dict[str, KindInfo]:
    return kind_infos()

REPO = Path(__file__).resolve().parent.parent


def chain(depth: int) -> dict[str, Any]:
    """A spec of ``depth`` nested jobs (built iteratively)."""
    spec: dict[str, Any] = {"kind": "noop"}
    for _ in range(depth - 1):
        spec = {"kind": "noop", "children": [spec]}
    spec["node"] = "n1"
    return spec


def deep_path(depth: int) -> str:
    return "root" + ".children[0]" * (depth - 1)


BASE = {
    "title": "t",
    "kind": "noop",
    "node": "n1",
    "children": [
        {"kind": "sleep", "params": {"seconds": 1}},
        {"kind": "shell", "node": "n2", "params": {"command": ["true"]},
         "children": [{"kind": "noop"}]},
    ],
}


def with_change(path: list[Any], value: Any, *, delete: bool = False) -> dict[str, Any]:
    """BASE with the item at ``path`` replaced (or deleted)."""
    spec = copy.deepcopy(BASE)
    target: Any = spec
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


# -- every invalid field: (change, expected path, words the message must contain) --------
INVALID = [
    pytest.param(["kind"], "deploy", "root.kind", ["unknown kind", "deploy"], id="unknown-kind"),
    pytest.param(["children", 1, "children", 0, "kind"], "nope",
                 "root.children[1].children[0].kind", ["unknown kind", "nope"],
                 id="unknown-kind-deep"),
    pytest.param(["kind"], 7, "root.kind", ["string", "int"], id="kind-not-string"),
    pytest.param(["kind"], "", "root.kind", ["kind"], id="kind-empty"),
    pytest.param(["children", 0, "params", "seconds"], "x",
                 "root.children[0].params.seconds", ["integer or number", "str"],
                 id="sleep-seconds-string"),
    pytest.param(["children", 0, "params", "seconds"], True,
                 "root.children[0].params.seconds", ["bool"], id="sleep-seconds-bool"),
    pytest.param(["children", 0, "params", "seconds"], -1,
                 "root.children[0].params.seconds", ["from 0"], id="sleep-seconds-negative"),
    pytest.param(["children", 0, "params", "seconds"], float("nan"),
                 "root.children[0].params.seconds", ["finite"], id="sleep-seconds-nan"),
    pytest.param(["children", 0, "params", "seconds"], float("inf"),
                 "root.children[0].params.seconds", ["finite"], id="sleep-seconds-inf"),
    pytest.param(["children", 0, "params"], {}, "root.children[0].params.seconds",
                 ["required"], id="sleep-seconds-missing"),
    pytest.param(["children", 0, "params", "minutes"], 1, "root.children[0].params.minutes",
                 ["unknown parameter", "seconds"], id="unknown-param"),
    pytest.param(["params"], {"x": 1}, "root.params.x", ["unknown parameter", "noop"],
                 id="noop-takes-no-params"),
    pytest.param(["children", 0, "params"], [1], "root.children[0].params", ["object", "list"],
                 id="params-not-object"),
    pytest.param(["children", 1, "params", "command"], 5, "root.children[1].params.command",
                 ["array or string", "int"], id="shell-command-int"),
    pytest.param(["children", 1, "params", "command"], [], "root.children[1].params.command",
                 ["empty"], id="shell-command-empty-list"),
    pytest.param(["children", 1, "params", "command"], "  ",
                 "root.children[1].params.command", ["empty"], id="shell-command-blank"),
    pytest.param(["children", 1, "params", "command"], ["ls", 3],
                 "root.children[1].params.command[1]", ["must be a string, got int"],
                 id="shell-command-non-string-part"),
    pytest.param(["children", 1, "params", "env"], {"A": 1}, "root.children[1].params.env.A",
                 ["string"], id="shell-env-non-string"),
    pytest.param(["children", 1, "params", "env"], "A=1", "root.children[1].params.env",
                 ["object"], id="shell-env-not-object"),
    pytest.param(["children", 1, "params", "cwd"], 3, "root.children[1].params.cwd",
                 ["string"], id="shell-cwd-int"),
    pytest.param(["children", 1, "params", "timeout"], 0, "root.children[1].params.timeout",
                 ["more than 0"], id="shell-timeout-zero"),
    pytest.param(["children", 1, "params", "timeout"], False,
                 "root.children[1].params.timeout", ["bool"], id="shell-timeout-bool"),
    pytest.param(["children", 1, "params", "grace"], True, "root.children[1].params.grace",
                 ["bool"], id="shell-grace-bool"),
    pytest.param(["children", 1, "params", "grace"], -0.5, "root.children[1].params.grace",
                 ["from 0"], id="shell-grace-negative"),
    pytest.param(["children", 0, "tags"], {"workspace": "w"}, "root.children[0].tags",
                 ["root only"], id="tags-on-child"),
    pytest.param(["children", 1, "children", 0, "tags"], {},
                 "root.children[1].children[0].tags", ["root only"], id="empty-tags-on-child"),
    pytest.param(["tags"], {"colour": "red"}, "root.tags.colour", ["unknown tag", "workspace"],
                 id="unknown-tag-key"),
    pytest.param(["tags"], {"workspace": 3}, "root.tags.workspace", ["string"],
                 id="tag-value-not-string"),
    pytest.param(["tags"], {"workspace": ""}, "root.tags.workspace", ["printable"],
                 id="tag-value-empty"),
    pytest.param(["tags"], ["workspace"], "root.tags", ["object", "list"], id="tags-not-object"),
    pytest.param(["node"], 5, "root.node", ["string", "int"], id="node-int"),
    pytest.param(["children", 1, "node"], None, "root.children[1].node", ["string"],
                 id="node-null"),
    pytest.param(["node"], "x" * (MAX_NAME + 1), "root.node", [str(MAX_NAME)], id="node-too-long"),
    pytest.param(["node"], "a\nb", "root.node", ["printable"], id="node-not-printable"),
    pytest.param(["title"], 3, "root.title", ["string"], id="title-int"),
    pytest.param(["colour"], "red", "root.colour", ["unknown field"], id="unknown-field"),
    pytest.param(["children", 0, "chidren"], [], "root.children[0].chidren",
                 ["unknown field"], id="unknown-field-child"),
    pytest.param(["children"], {"kind": "noop"}, "root.children", ["array", "dict"],
                 id="children-not-list"),
    pytest.param(["children", 1, "children"], "noop", "root.children[1].children",
                 ["array", "str"], id="children-string"),
    pytest.param(["children", 0], "noop", "root.children[0]", ["object", "str"],
                 id="child-not-object"),
    pytest.param(["children", 1, "children", 0], None, "root.children[1].children[0]",
                 ["object"], id="grandchild-null"),
]


@pytest.mark.parametrize(("path", "value", "where", "words"), INVALID)
def test_invalid_field_is_named_with_its_path(kinds: dict[str, KindInfo], path: list[Any],
                                              value: Any, where: str, words: list[str]) -> None:
    parse_spec(copy.deepcopy(BASE), kinds)  # the unchanged spec is valid
    err = rejected(with_change(path, value), kinds)
    assert err.path == where
    for word in words:
        assert word in err.message, (word, err.message)


def test_missing_kind(kinds: dict[str, KindInfo]) -> None:
    err = rejected(with_change(["kind"], None, delete=True), kinds)
    assert err.path == "root.kind"
    assert "missing" in err.message
    err = rejected(with_change(["children", 1, "children", 0, "kind"], None, delete=True), kinds)
    assert err.path == "root.children[1].children[0].kind"


def test_missing_node(kinds: dict[str, KindInfo]) -> None:
    err = rejected(with_change(["node"], None, delete=True), kinds)
    assert err.path == "root.node"
    assert "missing" in err.message
    # --node fills it in; an invalid --node is itself named.
    parse_spec(with_change(["node"], None, delete=True), kinds, default_node="n9")
    err = rejected(BASE, kinds, default_node="")
    assert err.path == "--node"
    err = rejected(BASE, kinds, default_node=5)  # type: ignore[arg-type]
    assert err.path == "--node"


@pytest.mark.parametrize("spec", [{}, None, [], "noop", 3, [{"kind": "noop"}]],
                         ids=["empty", "null", "list", "string", "int", "list-of-job"])
def test_empty_or_non_object_tree(kinds: dict[str, KindInfo], spec: Any) -> None:
    err = rejected(spec, kinds)
    assert err.path == "root"
    if spec == {}:
        assert "empty" in err.message


def test_depth_limit(kinds: dict[str, KindInfo]) -> None:
    assert MAX_DEPTH == 256
    jobs, _ = parse_spec(chain(MAX_DEPTH), kinds)
    assert len(jobs) == MAX_DEPTH
    assert max(j.depth for j in jobs) == MAX_DEPTH
    err = rejected(chain(MAX_DEPTH + 1), kinds)
    assert err.path == deep_path(MAX_DEPTH + 1)
    assert str(MAX_DEPTH) in err.message


def test_very_deep_tree_rejected_without_recursion_error(kinds: dict[str, KindInfo]) -> None:
    err = rejected(chain(5000), kinds)
    assert err.path == deep_path(MAX_DEPTH + 1)


def test_size_limit(kinds: dict[str, KindInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "MAX_JOBS", 10)
    wide_ok = {"kind": "noop", "node": "n", "children": [{"kind": "noop"}] * 9}
    assert len(parse_spec(wide_ok, kinds)[0]) == 10
    wide_bad = {"kind": "noop", "node": "n", "children": [{"kind": "noop"}] * 10}
    err = rejected(wide_bad, kinds)
    assert err.path == "root"
    assert "10 jobs" in err.message
    # Over the limit only through nesting: found when the 11th job is reached.
    nested = {"kind": "noop", "node": "n", "children": [
        {"kind": "noop", "children": [{"kind": "noop"}] * 4},
        {"kind": "noop", "children": [{"kind": "noop"}] * 4},
    ]}
    err = rejected(nested, kinds)
    assert "limit of 10 jobs" in err.message
    assert len(parse_spec(chain(10), kinds)[0]) == 10
    err = rejected(chain(11), kinds)
    assert err.path == deep_path(10)  # the job whose children would be the 11th


def test_size_limit_checked_before_walking_a_huge_child_list(
        kinds: dict[str, KindInfo], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "MAX_JOBS", 1000)
    # Children that are all invalid: the size is refused first, at the root.
    err = rejected({"kind": "noop", "node": "n", "children": [None] * 5000}, kinds)
    assert err.path == "root"
    assert "1000" in err.message


def test_real_limits_are_documented() -> None:
    assert MAX_JOBS == 200_000
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in docs if p.exists())
    assert text, "no README.md or docs/*.md to document the spec limits in"
    spellings = {f"{MAX_JOBS:,}", str(MAX_JOBS), f"{MAX_JOBS:,}".replace(",", " "),
                 f"{MAX_JOBS:_}", f"{MAX_JOBS // 1000}k", f"{MAX_JOBS // 1000} 000"}
    assert any(s in text for s in spellings), "MAX_JOBS is not documented"
    assert re.search(rf"\b{MAX_DEPTH}\b", text), "MAX_DEPTH is not documented"


# -- valid specs --------------------------------------------------------------------
def test_flatten_ids_order_and_inheritance(kinds: dict[str, KindInfo]) -> None:
    spec = {
        "title": "deploy", "kind": "noop", "node": "n1",
        "tags": {"workspace": "acme", "application": "shop", "version": "3",
                 "instance": "i-7", "node": "n1"},
        "children": [
            {"kind": "shell", "params": {"command": ["make", "build"], "env": {"A": "1"},
                                         "timeout": 2.5, "grace": 0}, "node": "n2",
             "children": [{"kind": "noop"}, {"kind": "sleep", "params": {"seconds": 0}}]},
            {"kind": "sleep", "params": {"seconds": 2}, "title": "nap"},
            {"kind": "fail", "params": {"message": "boom"}},
        ],
    }
    before = copy.deepcopy(spec)
    jobs, tags = parse_spec(spec, kinds)
    assert spec == before  # the input is not modified
    assert tags == spec["tags"]
    assert len(jobs) == 6
    by_id = {j.id: j for j in jobs}
    assert len(by_id) == 6
    for job in jobs:
        assert isinstance(job, JobSpec)
        assert uuid.UUID(job.id).version == 4
        assert str(uuid.UUID(job.id)) == job.id
        assert job.root == jobs[0].id
    root = jobs[0]
    assert root.parent is None and root.depth == 1 and root.title == "deploy"
    position = {j.id: i for i, j in enumerate(jobs)}
    for job in jobs[1:]:
        assert position[job.parent] < position[job.id]  # parents before children
        assert job.id in by_id[job.parent].children
        assert job.depth == by_id[job.parent].depth + 1
    shell, nap, fail = (by_id[c] for c in root.children)
    assert (shell.kind, nap.kind, fail.kind) == ("shell", "sleep", "fail")
    assert shell.node == "n2" and nap.node == "n1" and fail.node == "n1"
    assert [by_id[c].node for c in shell.children] == ["n2", "n2"]  # inherited from shell
    assert nap.title == "nap" and fail.title == "fail"  # title defaults to the kind
    assert shell.params["timeout"] == 2.5 and fail.params == {"message": "boom"}
    assert by_id[shell.children[0]].params == {}
    assert [len(j.children) for j in jobs] == [3, 2, 0, 0, 0, 0]
    assert [j.kind for j in jobs] == ["noop", "shell", "noop", "sleep", "sleep", "fail"]


def test_default_node_and_override(kinds: dict[str, KindInfo]) -> None:
    spec = {"kind": "noop", "children": [{"kind": "noop"}, {"kind": "noop", "node": "x"}]}
    jobs, tags = parse_spec(spec, kinds, default_node="d")
    assert tags == {}
    assert [j.node for j in jobs] == ["d", "d", "x"]
    # An explicit root node wins over --node.
    jobs, _ = parse_spec({**spec, "node": "r"}, kinds, default_node="d")
    assert [j.node for j in jobs] == ["r", "r", "x"]


def test_each_parse_gets_fresh_ids(kinds: dict[str, KindInfo]) -> None:
    first, _ = parse_spec(BASE, kinds)
    second, _ = parse_spec(BASE, kinds)
    assert not {j.id for j in first} & {j.id for j in second}


def test_numbers_accept_int_and_float_but_not_bool(kinds: dict[str, KindInfo]) -> None:
    for value in (0, 3, 0.25):
        parse_spec({"kind": "sleep", "node": "n", "params": {"seconds": value}}, kinds)
    for value in (True, False):
        err = rejected({"kind": "sleep", "node": "n", "params": {"seconds": value}}, kinds)
        assert err.path == "root.params.seconds"


@pytest.mark.parametrize("value", [{1, 2}, object(), [1, float("nan")], {"k": float("inf")},
                                   b"bytes"], ids=["set", "object", "nan", "inf", "bytes"])
def test_params_must_be_json_values(kinds: dict[str, KindInfo], value: Any) -> None:
    # A kind whose params are not declared still only takes what JSON can carry: the
    # spec is stored as JSON, and a Python dict spec must not get past validation
    # with something that fails (or silently changes) when it is stored.
    known = {**kinds, "remote": KindInfo("remote", None)}
    spec = {"kind": "noop", "node": "n", "children": [
        {"kind": "remote", "params": {"ok": 1, "x": value}}]}
    err = rejected(spec, known)
    assert err.path.startswith("root.children[0].params.x"), err.path


def test_unknown_params_of_unverifiable_kind_pass(kinds: dict[str, KindInfo]) -> None:
    # A kind advertised by a node but not loaded here: params cannot be checked,
    # but must still be an object.
    known = {**kinds, "remote": KindInfo("remote", None)}
    jobs, _ = parse_spec({"kind": "remote", "node": "n", "params": {"any": [1]}}, known)
    assert jobs[0].params == {"any": [1]}
    err = rejected({"kind": "remote", "node": "n", "params": 3}, known)
    assert err.path == "root.params"
