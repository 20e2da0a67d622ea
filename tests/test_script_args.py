"""The Lua scripts' named arguments: what ``SCRIPTS`` and ``ITEM_FIELDS`` declare is
exactly what each script reads (no dead slot, no name bound to nothing), and a call
with a wrong set of names is refused before anything reaches Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from jobgrove.messaging.connection import fake_client, fake_server
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.scripts import ITEM_FIELDS, SCRIPTS, TreeScript, source

LUA = resources.files("jobgrove.messaging") / "lua"


def used_names(name: str) -> set[str]:
    body = (LUA / f"{name}.lua").read_text(encoding="utf-8")
    body = re.sub(r"--[^\n]*", "", body)  # comments name arguments too
    return set(re.findall(r"\bA\.([a-z_]+)", body))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_script_reads_exactly_its_declared_arguments(name: str) -> None:
    declared = set(SCRIPTS[name]) | set(ITEM_FIELDS.get(name, ()))
    assert used_names(name) == declared, (
        f"lua/{name}.lua reads {sorted(used_names(name))}, "
        f"scripts.py declares {sorted(declared)}")


def test_the_shared_functions_take_no_named_argument() -> None:
    # A shared function reading A.* would depend on which script includes it.
    assert used_names("common") == set()


def test_the_prelude_binds_arguments_in_declared_order() -> None:
    text = source("claim")
    for i, arg in enumerate(SCRIPTS["claim"], start=4):
        assert f"{arg} = ARGV[{i}]" in text
    assert "local ITEMS" not in text
    assert "cjson.decode(ARGV[4])" in source("finish")  # finish: items only


def test_calls_with_wrong_names_are_refused() -> None:
    script = TreeScript(fake_client(fake_server()), "fail")
    keys = Keys()
    with pytest.raises(TypeError, match=r"missing \['summary'\], unexpected \['sumary'\]"):
        script.call_args(keys, "r", {"job": "j", "sumary": "x", "token": "", "instance": ""})
    _, argv = script.call_args(keys, "r", {"instance": "i", "summary": "x", "job": "j",
                                           "token": "t"})
    assert argv[3:] == ["j", "x", "t", "i"]  # declared order, whatever order given in
    finish = TreeScript(fake_client(fake_server()), "finish")
    with pytest.raises(TypeError, match="an item has 2 values, not 12"):
        finish.call_args(keys, "r", {"items": [("j", "t")]})
    with pytest.raises(TypeError, match=r"missing \['items'\]"):
        finish.call_args(keys, "r", {})


def test_tree_keys_are_only_the_named_ones() -> None:
    keys = Keys()
    assert keys.tree_key("r", "state") == "jg:{r}:state"
    with pytest.raises(ValueError, match="no-such-part"):
        keys.tree_key("r", "no-such-part")
