"""The tree rules of the pure core (TreeModel, states), without Redis or threads."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from jobgrove.core.model import TreeModel
from jobgrove.core.spec import parse_spec
from jobgrove.core.states import FINISHED, State, can_transition
from jobgrove.jobs.api import kind_infos


def build(spec: dict[str, Any]) -> tuple[TreeModel, dict[str, str]]:
    """A model of ``spec`` and a map title -> job id (titles name the jobs in tests)."""
    jobs, _ = parse_spec(spec, kind_infos())
    return TreeModel(jobs), {j.title: j.id for j in jobs}


def job(title: str, *children: dict[str, Any], node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "noop", "title": title}
    if children:
        spec["children"] = list(children)
    if node:
        spec["node"] = node
    return spec


#       root
#      /    \
#     a      b
#    / \     |
#   a1  a2   b1
TREE = {**job("root", job("a", job("a1"), job("a2", node="n2")), job("b", job("b1"))),
        "node": "n1"}


def states(model: TreeModel, ids: dict[str, str]) -> dict[str, str]:
    return {title: model.state(i).value for title, i in ids.items()}


def run_ok(model: TreeModel, job_id: str) -> None:
    assert model.start(job_id)
    assert model.finish(job_id, ok=True) is State.SUCCESS


# -- states ---------------------------------------------------------------------------
def test_transition_table() -> None:
    allowed = {
        (State.NEW, State.WAITING), (State.NEW, State.ABORTED),
        (State.WAITING, State.RUNNING), (State.WAITING, State.ABORTED),
        (State.RUNNING, State.SUCCESS), (State.RUNNING, State.FAILED),
        (State.RUNNING, State.ABORTED),
    }
    for old, new in itertools.product(State, State):
        assert can_transition(old, new) == ((old, new) in allowed), (old, new)
    assert {s for s in State if s.finished} == set(FINISHED) == {
        State.SUCCESS, State.FAILED, State.ABORTED}
    assert str(State.RUNNING) == "RUNNING" and State("ABORTED") is State.ABORTED


# -- readiness ------------------------------------------------------------------------
def test_leaves_first() -> None:
    model, ids = build(TREE)
    assert states(model, ids) == {"root": "NEW", "a": "NEW", "a1": "WAITING", "a2": "WAITING",
                                  "b": "NEW", "b1": "WAITING"}
    assert set(model.runnable()) == {ids["a1"], ids["a2"], ids["b1"]}
    assert set(model.runnable("n1")) == {ids["a1"], ids["b1"]}
    assert model.runnable("n2") == [ids["a2"]]
    assert model.runnable("n3") == []
    # A NEW job cannot be started.
    for title in ("root", "a", "b"):
        assert not model.start(ids[title])
        assert model.state(ids[title]) is State.NEW


def test_parent_waits_for_all_children_success() -> None:
    model, ids = build(TREE)
    run_ok(model, ids["a1"])
    assert model.state(ids["a"]) is State.NEW  # a2 not done yet
    assert model.start(ids["a2"])
    assert model.state(ids["a"]) is State.NEW  # a2 running is not enough
    assert model.finish(ids["a2"], ok=True) is State.SUCCESS
    assert model.state(ids["a"]) is State.WAITING
    assert model.state(ids["root"]) is State.NEW
    run_ok(model, ids["a"])
    assert model.state(ids["root"]) is State.NEW  # b is not done
    run_ok(model, ids["b1"])
    run_ok(model, ids["b"])
    assert model.state(ids["root"]) is State.WAITING
    run_ok(model, ids["root"])
    assert model.outcome is State.SUCCESS
    assert all(j.state is State.SUCCESS and j.cause is None for j in model.jobs.values())


def test_single_job_tree() -> None:
    model, ids = build({"kind": "noop", "title": "only", "node": "n"})
    assert model.runnable() == [ids["only"]]
    run_ok(model, ids["only"])
    assert model.outcome is State.SUCCESS


def test_start_twice_refused() -> None:
    model, ids = build(TREE)
    assert model.start(ids["a1"])
    assert not model.start(ids["a1"])
    assert model.state(ids["a1"]) is State.RUNNING
    assert ids["a1"] not in model.runnable()
    model.finish(ids["a1"], ok=True)
    assert not model.start(ids["a1"])
    assert model.state(ids["a1"]) is State.SUCCESS


def test_finish_of_a_job_not_running_is_stale() -> None:
    model, ids = build(TREE)
    assert model.finish(ids["a1"], ok=True) is None  # WAITING
    assert model.finish(ids["root"], ok=False) is None  # NEW
    assert states(model, ids)["a1"] == "WAITING"
    assert model.abort_cause is None


# -- failure ------------------------------------------------------------------------
def test_failure_aborts_the_tree_with_cause() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    model.start(ids["b1"])
    assert model.finish(ids["a1"], ok=False) is State.FAILED
    assert model.abort_cause == ids["a1"]
    # NEW and WAITING jobs end ABORTED at once, with the failed job as cause.
    for title in ("root", "a", "a2", "b"):
        assert model.state(ids[title]) is State.ABORTED, title
        assert model.jobs[ids[title]].cause == ids["a1"], title
    # The RUNNING sibling is asked to abort; it ends ABORTED whatever it reports.
    assert model.state(ids["b1"]) is State.RUNNING
    assert model.jobs[ids["b1"]].abort_requested == ids["a1"]
    assert model.runnable() == []
    assert model.finish(ids["b1"], ok=True) is State.ABORTED
    assert model.jobs[ids["b1"]].cause == ids["a1"]
    assert model.jobs[ids["a1"]].cause is None  # the failed job itself has no cause
    assert model.outcome is State.ABORTED


def test_failure_of_running_flagged_job_ends_aborted() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    model.start(ids["a2"])
    model.finish(ids["a1"], ok=False)
    # a2 then fails too (e.g. killed by the abort): it is ABORTED, not a second FAILED.
    assert model.finish(ids["a2"], ok=False) is State.ABORTED
    assert model.jobs[ids["a2"]].cause == ids["a1"]
    assert [i for i, j in model.jobs.items() if j.state is State.FAILED] == [ids["a1"]]


def test_success_after_abort_does_not_wake_parent() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    model.start(ids["a2"])
    model.finish(ids["b1"], ok=False)  # b1 is WAITING: stale, nothing happens
    assert model.abort_cause is None
    model.start(ids["b1"])
    model.finish(ids["b1"], ok=False)
    model.finish(ids["a1"], ok=True)
    model.finish(ids["a2"], ok=True)
    assert model.state(ids["a1"]) is State.ABORTED
    assert model.state(ids["a"]) is State.ABORTED
    assert not model.start(ids["a"])


# -- user aborts ----------------------------------------------------------------------
def test_user_abort_of_running_job() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    model.start(ids["b1"])
    assert model.abort(ids["a1"]) is State.RUNNING
    assert model.jobs[ids["a1"]].abort_requested == ids["a1"]
    assert model.jobs[ids["b1"]].abort_requested == ids["a1"]
    for title in ("root", "a", "a2", "b"):
        assert model.jobs[ids[title]].cause == ids["a1"]
        assert model.state(ids[title]) is State.ABORTED
    assert model.finish(ids["a1"], ok=True) is State.ABORTED
    assert model.jobs[ids["a1"]].cause == ids["a1"]  # it caused its own abort
    assert model.finish(ids["b1"], ok=False) is State.ABORTED
    assert model.jobs[ids["b1"]].cause == ids["a1"]


def test_user_abort_of_waiting_job() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    assert model.abort(ids["b1"]) is State.ABORTED
    assert model.jobs[ids["b1"]].cause == ids["b1"]
    assert model.jobs[ids["a2"]].cause == ids["b1"]
    assert model.jobs[ids["a1"]].abort_requested == ids["b1"]
    assert model.state(ids["root"]) is State.ABORTED
    assert model.jobs[ids["root"]].cause == ids["b1"]


def test_user_abort_of_root() -> None:
    model, ids = build(TREE)
    model.start(ids["a2"])
    assert model.abort(ids["root"]) is State.ABORTED
    assert model.jobs[ids["root"]].cause == ids["root"]
    for title in ("a", "a1", "b", "b1"):
        assert model.state(ids[title]) is State.ABORTED
        assert model.jobs[ids[title]].cause == ids["root"]
    assert model.jobs[ids["a2"]].abort_requested == ids["root"]
    assert model.finish(ids["a2"], ok=True) is State.ABORTED


def test_first_abort_cause_wins() -> None:
    model, ids = build(TREE)
    model.start(ids["a1"])
    model.start(ids["a2"])
    model.abort(ids["a2"])
    model.abort(ids["a1"])  # already flagged with a2 as cause: stays so
    model.finish(ids["a1"], ok=False)
    model.finish(ids["a2"], ok=True)
    assert model.jobs[ids["a1"]].cause == ids["a2"]
    assert model.abort_cause == ids["a2"]
    assert {j.cause for j in model.jobs.values()} == {ids["a2"]}


# -- finished never changes -----------------------------------------------------------
def test_finished_jobs_never_change() -> None:
    model, ids = build(TREE)
    run_ok(model, ids["a1"])
    model.start(ids["a2"])
    model.finish(ids["a2"], ok=False)
    snapshot = {i: (j.state, j.cause) for i, j in model.jobs.items()}
    for job_id in ids.values():
        assert model.abort(job_id) is snapshot[job_id][0]
        assert model.finish(job_id, ok=True) is None
        assert model.finish(job_id, ok=False) is None
        assert not model.start(job_id)
    assert {i: (j.state, j.cause) for i, j in model.jobs.items()} == snapshot
    assert model.state(ids["a1"]) is State.SUCCESS  # succeeded before the failure: kept
    assert model.abort_cause == ids["a2"]


@pytest.mark.parametrize("seed", range(20))
def test_random_runs_keep_invariants(seed: int) -> None:
    import random

    rng = random.Random(seed)
    spec = {**job("r", *(job(f"c{i}", *(job(f"c{i}.{k}") for k in range(rng.randrange(3))))
                         for i in range(rng.randrange(1, 4)))), "node": "n"}
    model, _ = build(spec)
    for _ in range(60):
        op = rng.random()
        running = [i for i, j in model.jobs.items() if j.state is State.RUNNING]
        if op < 0.4 and model.runnable():
            assert model.start(rng.choice(model.runnable()))
        elif op < 0.85 and running:
            model.finish(rng.choice(running), ok=rng.random() < 0.85)
        elif op >= 0.97:
            model.abort(rng.choice(list(model.jobs)))
        for item in model.jobs.values():
            if item.state is State.SUCCESS:
                assert all(model.state(c) is State.SUCCESS for c in item.spec.children)
            if item.state is State.WAITING:
                assert all(model.state(c) is State.SUCCESS for c in item.spec.children)
            if item.state is State.ABORTED:
                assert item.cause in model.jobs
            if model.abort_cause is not None:
                assert item.state not in (State.NEW, State.WAITING)
