"""The Lua scripts that change job state: one atomic compare-and-set per change, with
all of its consequences (tree abort, readiness, hints) in the same step.

Each script is called with named arguments. ``SCRIPTS`` declares them; the generated
prelude binds ``NS`` (key namespace), ``CH`` (channel prefix) and ``ROOT`` (always
first) and the script's own arguments as
``A.<name>``, then names the tree's keys and channels (``keys.lua_names``). A script of
``ITEM_FIELDS`` also takes a list of items (``items=[(value, ...), ...]``, each in the
order of its fields), bound as
``ITEMS``, a list of tables: one call does the same step for many jobs of one tree
(one script run instead of one per job: ``finish`` records a batch of outcomes). The
shared functions of ``lua/common.lua`` follow, then the script's body. The only key passed is
the tree's ``meta`` key: it gives the script its hash slot, and every key it touches
shares that slot (the ``{root}`` hash tag). Redis 7 allows undeclared keys of the
declared key's slot; the other keys cannot all be declared up front (a tree's ready
lists are per node, found in the tree itself).

On Redis Cluster the scripts start with a ``#!lua`` shebang: Redis then checks that
every key a script touches is in the declared key's slot, wherever the slots live
(without it, a key of another slot on the same server passes). Not elsewhere: Redis
before 7.0 and fakeredis (the embedded mode) cannot load a shebang, and one server has
no slots to check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from jobgrove.messaging.keys import Keys, lua_names
from jobgrove.messaging.topology import is_cluster

#: Script name -> its named arguments, in order (each .lua file documents them).
SCRIPTS: dict[str, tuple[str, ...]] = {
    "claim": ("node", "max", "token_base", "instance", "epoch"),
    "finish": (),
    "abort": ("job",),
    "reap": ("node", "summary", "spare", "epoch", "upto"),
    "fail": ("job", "summary", "token", "instance"),
    "graft": ("parent", "jobs", "limit"),
    "rerun": (),
    "progress": ("job", "token", "progress"),
    "delete": ("inline",),
    "own": ("job", "instance"),
}


#: Script name -> the named fields of each item it takes (see the module's doc).
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "finish": ("job", "token", "instance", "epoch", "outcome", "summary", "result",
               "reporter", "claim_token", "attempt", "run", "log"),
}


def _prelude(args: Sequence[str], fields: Sequence[str], cluster: bool) -> str:
    named = ", ".join(f"{name} = ARGV[{i}]" for i, name in enumerate(args, start=4))
    text = ("local NS, CH, ROOT = ARGV[1], ARGV[2], ARGV[3]\n"
            f"local A = {{{named}}}\n"
            f"local ON_CLUSTER = {'true' if cluster else 'false'}\n")
    if fields:
        # The items come as one JSON array of arrays: packing one argument costs the
        # client far less than packing a dozen per item.
        text += (f"local ITEMS = {{}}\n"
                 f"do\n"
                 f"  local F = {{{', '.join(repr(f) for f in fields)}}}\n"
                 f"  for i, values in ipairs(cjson.decode(ARGV[{4 + len(args)}])) do\n"
                 f"    local item = {{}}\n"
                 f"    for j = 1, #F do item[F[j]] = values[j] end\n"
                 f"    ITEMS[i] = item\n"
                 f"  end\n"
                 f"end\n")
    return text + lua_names()


def source(name: str, shebang: bool = False) -> str:
    """The whole Lua text of script ``name`` (``shebang``: for Redis Cluster, where
    the scripts also publish status events without asking who listens)."""
    folder = resources.files("jobgrove.messaging") / "lua"
    texts = [(folder / f"{part}.lua").read_text(encoding="utf-8") for part in ("common", name)]
    return "\n".join(["#!lua"] * shebang
                     + [_prelude(SCRIPTS[name], ITEM_FIELDS.get(name, ()), shebang), *texts])


class TreeScript:
    """One registered script, called as ``script(keys, root, name=value, ...)``."""

    def __init__(self, client: Any, name: str) -> None:
        self.name = name
        self.args = SCRIPTS[name]
        self.fields = ITEM_FIELDS.get(name, ())
        self._script = client.register_script(source(name, shebang=is_cluster(client)))

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    @property
    def text(self) -> str:
        return str(self._script.script)

    def call_args(self, keys: Keys, root: str,
                  named: dict[str, Any]) -> tuple[list[str], list[Any]]:
        """(KEYS, ARGV) of a call; every declared argument must be given, nothing else
        (and ``items``, for a script of ``ITEM_FIELDS``: a list of sequences of values,
        each in the order of the item fields)."""
        expected = {*self.args, "items"} if self.fields else set(self.args)
        if named.keys() != expected:
            missing = sorted(expected - named.keys())
            extra = sorted(named.keys() - expected)
            raise TypeError(f"script {self.name}: missing {missing}, unexpected {extra}")
        argv = [keys.ns, keys.channel_prefix, root, *(named[a] for a in self.args)]
        if self.fields:
            items = named["items"]
            for item in items:
                if len(item) != len(self.fields):
                    raise TypeError(f"script {self.name}: an item has {len(item)} values, "
                                    f"not {len(self.fields)} ({', '.join(self.fields)})")
            argv.append(json.dumps(items))
        return [keys.tree_key(root, "meta")], argv

    def __call__(self, keys: Keys, root: str, **named: Any) -> Any:
        key_list, argv = self.call_args(keys, root, named)
        return self._script(keys=key_list, args=argv)


def register_scripts(client: Any) -> dict[str, TreeScript]:
    """Register every script on ``client``; returns name -> script."""
    return {name: TreeScript(client, name) for name in SCRIPTS}
