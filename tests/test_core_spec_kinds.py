"""Spec checks that belong to kinds and attempts: each kind's own parameter checks
(the built-ins refuse what cannot run), retries, retry delays and timeouts, and grafted
subtrees checked like a submit."""

from __future__ import annotations

from typing import Any

import pytest

from jobgrove.core.spec import KindInfo, Param, parse_graft, parse_spec
from jobgrove.errors import SpecError
from jobgrove.jobs.api import kind_infos
from tests.spec_helpers import rejected


@pytest.fixture(scope="module")
def kinds() -> dict[str, KindInfo]:
    return kind_infos()


def test_a_kinds_own_check_names_the_field(kinds: dict[str, KindInfo]) -> None:
    seen: list[dict[str, Any]] = []

    def check(params: dict[str, Any]) -> tuple[str, str] | None:
        seen.append(params)
        if params.get("n") == 1:
            return "deep.er[2]", "not one"
        if params.get("n") == 2:
            return "", "not two"
        if params.get("n") == 3:
            raise KeyError("x")
        return None

    known = {**kinds, "mine": KindInfo("mine", None, check)}
    spec = {"kind": "noop", "node": "n", "children": [{"kind": "mine", "params": {"n": 1}}]}
    err = rejected(spec, known)
    assert (err.path, err.message) == ("root.children[0].params.deep.er[2]", "not one")
    assert rejected({"kind": "mine", "node": "n", "params": {"n": 2}}, known).path \
        == "root.params"
    err = rejected({"kind": "mine", "node": "n", "params": {"n": 3}}, known)
    assert err.path == "root.params" and "could not check its params (KeyError" in err.message
    parse_spec({"kind": "mine", "node": "n", "params": {"n": 4}}, known)
    # The declared params are checked first: the kind's check sees well-typed values.
    typed = {**kinds, "typed": KindInfo("typed", (Param("n", (int,)),), check)}
    seen.clear()
    assert rejected({"kind": "typed", "node": "n", "params": {"n": "1"}}, typed).path \
        == "root.params.n"
    assert seen == []


@pytest.mark.parametrize(("kind", "params", "path", "needle"), [
    ("sleep", {"seconds": 1e10}, "seconds", "from 0 to 2678400 seconds (31 days), got 1"),
    ("sleep", {"seconds": 10**400}, "seconds", "31 days"),
    ("sleep", {"seconds": -1}, "seconds", "from 0 to"),
    ("shell", {"command": ["echo", "a\x00b"]}, "command[1]", "NUL byte"),
    ("shell", {"command": "echo a\x00b"}, "command", "NUL byte"),
    ("shell", {"command": ["echo", 3]}, "command[1]", "must be a string, got int"),
    ("shell", {"command": [""]}, "command[0]", "must not be empty"),
    ("shell", {"command": []}, "command", "must not be empty"),
    ("shell", {"command": "  "}, "command", "must not be empty"),
    ("shell", {"command": "x" * 200_000}, "command", "longer than 131071 bytes"),
    ("shell", {"command": ["echo"], "env": {"K": "v\x00"}}, "env.K", "NUL byte"),
    ("shell", {"command": ["echo"], "env": {"K\x00": "v"}}, "env['K\\x00']", "NUL byte"),
    ("shell", {"command": ["echo"], "env": {"A=B": "v"}}, "env['A=B']", "'='"),
    ("shell", {"command": ["echo"], "env": {"": "v"}}, "env['']", "needs a name"),
    ("shell", {"command": ["echo"], "env": {"K": 1}}, "env.K", "must be a string, got int"),
    ("shell", {"command": ["echo"], "cwd": "/tmp\x00"}, "cwd", "no NUL byte"),
    ("shell", {"command": ["echo"], "cwd": ""}, "cwd", "not empty"),
    ("shell", {"command": ["echo"], "timeout": 0}, "timeout", "more than 0"),
    ("shell", {"command": ["echo"], "timeout": 1e10}, "timeout", "31 days"),
    ("shell", {"command": ["echo"], "grace": 1e300}, "grace", "31 days"),
    ("shell", {"command": ["x" * 100_000] * 11}, "", "more than 1048576"),
])
def test_builtin_kinds_refuse_what_cannot_run(kinds: dict[str, KindInfo], kind: str,
                                              params: dict[str, Any], path: str,
                                              needle: str) -> None:
    spec = {"kind": "noop", "node": "n", "children": [{"kind": kind, "params": params}]}
    err = rejected(spec, kinds)
    assert err.path == "root.children[0].params" + (f".{path}" if path[:1].isalpha()
                                                     else path), err
    assert needle in err.message, err.message
    assert "\n" not in str(err) and "\x00" not in str(err)


def test_builtin_limits_inclusive(kinds: dict[str, KindInfo]) -> None:
    parse_spec({"kind": "sleep", "node": "n", "params": {"seconds": 31 * 24 * 3600}}, kinds)
    parse_spec({"kind": "shell", "node": "n", "params": {
        "command": ["x" * 131_071], "env": {"A_1": "é"}, "cwd": "/", "timeout": 0.1,
        "grace": 0}}, kinds)


# -- attempts: retries, retry_delay, timeout ----------------------------------------------
@pytest.mark.parametrize(("field", "value", "needle"), [
    ("retries", -1, "root.children[0].retries: must be between 0 and 100, got -1"),
    ("retries", 101, "root.children[0].retries: must be between 0 and 100, got 101"),
    ("retries", 2.5, "root.children[0].retries: must be an integer, got float"),
    ("retries", True, "root.children[0].retries: must be an integer, got bool"),
    ("retries", "3", "root.children[0].retries: must be an integer, got str"),
    ("retry_delay", "soon", "root.children[0].retry_delay: must be a number of seconds"),
    ("retry_delay", -1, "root.children[0].retry_delay: retry_delay must be between 0 and 300"),
    ("retry_delay", 301, "root.children[0].retry_delay: retry_delay must be between 0 and 300"),
    ("timeout", "10s", "root.children[0].timeout: must be a number of seconds, got str"),
    ("timeout", 0, "root.children[0].timeout: must be more than 0 seconds"),
    ("timeout", 1e10,
     "root.children[0].timeout: timeout must be between 0 and 2,678,400 seconds (31 days)"),
    ("timeout", float("inf"), "root.children[0].timeout: timeout must be between"),
])
def test_attempt_fields_are_checked_and_named(kinds: dict[str, KindInfo], field: str,
                                              value: Any, needle: str) -> None:
    spec = {"kind": "noop", "node": "n1", "children": [{"kind": "noop", field: value}]}
    with pytest.raises(SpecError) as err:
        parse_spec(spec, kinds)
    assert needle in str(err.value)


def test_attempt_fields_reach_the_jobs(kinds: dict[str, KindInfo]) -> None:
    jobs, _ = parse_spec({"kind": "noop", "node": "n1", "retries": 3, "retry_delay": 0.5,
                          "timeout": 60, "children": [{"kind": "noop"}]}, kinds)
    root, child = jobs
    assert (root.retries, root.retry_delay, root.timeout) == (3, 0.5, 60.0)
    assert (child.retries, child.retry_delay, child.timeout) == (0, 1.0, None)
    assert [root.retry_wait(a) for a in (1, 2, 3, 12)] == [0.5, 1.0, 2.0, 300.0]


def test_graft_specs_are_checked_like_a_submit(kinds: dict[str, KindInfo]) -> None:
    from jobgrove.core.spec import MAX_DEPTH, MAX_JOBS

    common = {"root": "r", "parent": "p", "parent_node": "n1", "parent_depth": 2,
              "tree_size": 10}
    jobs = parse_graft([{"kind": "noop"}, {"kind": "noop", "node": "n2",
                                           "children": [{"kind": "noop"}]}], kinds, **common)
    assert [(j.parent == "p", j.node, j.depth) for j in jobs][:2] == [
        (True, "n1", 3), (True, "n2", 3)]
    assert jobs[2].node == "n2" and jobs[2].depth == 4
    for bad, needle in [({"kind": "noop", "retries": -2}, "graft.retries"),
                        ([{"kind": "noop"}, {"kind": "nope"}], "graft[1].kind"),
                        ({"kind": "noop", "tags": {"workspace": "w"}}, "graft.tags"),
                        ([], "graft: nothing to add"), ("noop", "graft: a job must be")]:
        with pytest.raises(SpecError) as err:
            parse_graft(bad, kinds, **common)
        assert needle in str(err.value), (bad, str(err.value))
    with pytest.raises(SpecError, match="larger than the limit"):
        parse_graft({"kind": "noop"}, kinds, **{**common, "tree_size": MAX_JOBS})
    with pytest.raises(SpecError, match="deeper than the limit"):
        parse_graft({"kind": "noop"}, kinds, **{**common, "parent_depth": MAX_DEPTH})
