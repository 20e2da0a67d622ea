"""The store and client against bad input, on a real redis-server and fakeredis:
unknown ids, any job id resolving its tree, invalid specs and unknown nodes writing
nothing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jobgrove import Client, SpecError, UnknownJobError, UnknownNodeError
from tests.store_helpers import make_store, submit


def test_unknown_ids(backend: Any) -> None:
    store = make_store(backend)
    submit(store, {"kind": "noop", "node": "n1"})
    missing = str(uuid.uuid4())
    for call in (store.abort, store.tree_status, store.job_status, store.job_state,
                 store.resolve_root):
        with pytest.raises(UnknownJobError) as info:
            call(missing)
        assert missing in str(info.value)
    client = Client(backend)
    with pytest.raises(UnknownJobError):
        client.wait(missing, timeout=1)
    with pytest.raises(UnknownJobError):
        client.abort("not-an-id")


def test_any_job_id_resolves_its_tree(backend: Any) -> None:
    store = make_store(backend)
    root, model = submit(store, {"kind": "noop", "node": "n1", "title": "top",
                                 "tags": {"workspace": "w"},
                                 "children": [{"kind": "noop", "children": [{"kind": "noop"}]}]})
    for job_id in model.jobs:
        assert store.resolve_root(job_id) == root
        status = store.tree_status(job_id)
        assert status["id"] == root and status["title"] == "top"
        assert status["tags"] == {"workspace": "w"}
        assert status["children"][0]["children"][0]["children"] == []
    child = status["children"][0]
    # The contract's status shape (attempt, result and progress came with retries,
    # results and progress; the root alone also has its run number).
    assert set(child) == {"id", "root", "parent", "node", "kind", "title", "state", "summary",
                          "cause", "created", "started", "finished", "tags", "attempt",
                          "result", "progress", "children"}
    assert status["run"] == 1 and "run" not in child
    assert child["parent"] == root and child["tags"] == {}


@pytest.mark.parametrize("spec", [
    {"kind": "nope", "node": "n1"},
    {"kind": "noop", "node": "n1", "children": [{"kind": "noop", "tags": {"workspace": "w"}}]},
    {},
])
def test_invalid_spec_writes_nothing(backend: Any, spec: Any) -> None:
    client = Client(backend)
    before = client.store.client.dbsize()
    with pytest.raises(SpecError):
        client.submit(spec, allow_unknown_node=True)
    assert client.store.client.dbsize() == before


def test_unknown_node_writes_nothing(backend: Any) -> None:
    client = Client(backend)
    before = client.store.client.dbsize()
    with pytest.raises(UnknownNodeError) as info:
        client.submit({"kind": "noop", "node": "ghost"})
    assert "ghost" in str(info.value)
    assert client.store.client.dbsize() == before
    root = client.submit({"kind": "noop", "node": "ghost"}, allow_unknown_node=True)
    assert client.status(root)["state"] == "WAITING"


@pytest.mark.parametrize(("params", "path"), [
    ({"kind": "sleep", "params": {"seconds": 1e10}}, "root.children[0].params.seconds"),
    ({"kind": "shell", "params": {"command": ["echo", "a\x00"]}},
     "root.children[0].params.command[1]"),
    ({"kind": "shell", "params": {"command": "echo \x00"}}, "root.children[0].params.command"),
    ({"kind": "shell", "params": {"command": ["env"], "env": {"K": "\x00"}}},
     "root.children[0].params.env.K"),
    ({"kind": "shell", "params": {"command": ["pwd"], "cwd": "/\x00"}},
     "root.children[0].params.cwd"),
], ids=["sleep-1e10", "nul-argv", "nul-command", "nul-env", "nul-cwd"])
def test_params_that_cannot_run_are_refused_at_submit(backend: Any, params: Any,
                                                      path: str) -> None:
    client = Client(backend)
    before = client.store.client.dbsize()
    with pytest.raises(SpecError) as info:
        client.submit({"kind": "noop", "node": "n1", "children": [params]},
                      allow_unknown_node=True)
    assert info.value.path == path
    assert client.store.client.dbsize() == before
