"""Every Redis key and pub/sub channel jobgrove uses, named in this one module.

One tree's keys all share the hash tag ``{root}`` (so they live in one hash slot, and a
script over one tree works on Redis Cluster too). What spans trees (the id index, tag
indexes, the node registry, per-node tree sets) lives in keys of its own, written in
separate steps.

The Lua scripts get their key names from here as well: ``lua_names()`` is the prelude
that names every per-tree key and channel for the script's tree (see ``scripts.py``).
"""

from __future__ import annotations

import dataclasses

#: The per-tree keys: ``<ns>:{<root>}:<part>``. Hashes by job id unless noted.
TREE_PARTS: dict[str, str] = {
    "meta": "the tree's own fields: root, title, created, tags, size, run, finished, "
            "abort_cause",
    "spec": "job id -> JSON spec (id, parent, node, kind, title, params, children)",
    "state": "job id -> state",
    "node": "job id -> the node it runs on",
    "parent": "job id -> parent id (the root has none)",
    "pending": "job id -> children not yet SUCCESS",
    "started": "job id -> start time (Redis server clock)",
    "finished": "job id -> finish time",
    "summary": "job id -> one-line outcome",
    "cause": "job id -> the job whose failure or abort aborted it",
    "token": "job id -> run token of its current run (fences late results)",
    "running": "job id -> node, for RUNNING jobs",
    "owner": "job id -> instance (node process) that claimed its current run",
    "epochs": "node -> highest lease epoch of that node seen in this tree (fencing)",
    "abort": "job id -> cause, for RUNNING jobs asked to abort",
    "results": "job id -> JSON result of a SUCCESS job",
    "attempt": "job id -> the attempt running or next (absent: 1)",
    "delayed": "sorted set: jobs waiting out a retry delay, scored by when they may run",
    "progress": "job id -> JSON {fraction, message} the job reported",
    "grafted": "job id -> JSON list of the children grafted under it (after its spec's)",
    "ctx": "key -> JSON value: the tree-wide context",
    "undone": "job id -> node that ran its on_tree_aborted hook",
    "open": "set of jobs not finished yet",
    "nodes": "set of the nodes the tree has jobs on",
    "logs": "job id -> '<log size>:<text>': the end of its log, stored by its node when "
            "it ended (``--log-keep-bytes``), served once that node is gone",
    "doomed": "while the tree is being deleted: job id -> node, and 'tags' -> JSON; what "
              "is left to remove from the indexes once every other key is gone "
              "(``retention.py``)",
}
#: ``<ns>:{<root>}:ready:<node>``: list of the tree's runnable jobs on one node.
READY_PART = "ready"


@dataclasses.dataclass(frozen=True)
class Keys:
    """Names under one namespace (default ``jg``), so several clusters can share a Redis."""

    ns: str = "jg"

    # -- one tree ------------------------------------------------------------------------
    def tree(self, root: str) -> str:
        """Prefix of every key of one tree."""
        return f"{self.ns}:{{{root}}}"

    def tree_key(self, root: str, part: str) -> str:
        if part not in TREE_PARTS and not part.startswith(f"{READY_PART}:"):
            raise ValueError(f"unknown tree key part {part!r}")
        return f"{self.ns}:{{{root}}}:{part}"

    def ready(self, root: str, node: str) -> str:
        return f"{self.ns}:{{{root}}}:{READY_PART}:{node}"

    # -- across trees --------------------------------------------------------------------
    @property
    def roots(self) -> str:
        """Hash: any job id -> its tree's root id."""
        return f"{self.ns}:root"

    @property
    def ids(self) -> str:
        """Sorted set of every job id, all scored 0, so ``ZRANGEBYLEX`` lists the ids
        starting with a prefix (``Store.resolve_id``). One key, hence one hash slot: the
        lookup works on Redis Cluster too. Written at submit; deleting a tree must
        remove its ids."""
        return f"{self.ns}:ids"

    @property
    def trees(self) -> str:
        """Sorted set of every tree's root, scored by creation time."""
        return f"{self.ns}:trees"

    def tag(self, key: str, value: str) -> str:
        """Sorted set of the roots tagged ``key=value``, scored by creation time."""
        return f"{self.ns}:tag:{key}:{value}"

    def node_trees(self, node: str) -> str:
        """Set of trees that have (or had) jobs on ``node``."""
        return f"{self.ns}:node:{node}:trees"

    def runs_on(self, node: str) -> str:
        """Sorted set of the trees with any job assigned to ``node``, scored by creation
        time (``list --runs-on``). Written at submit and, unlike ``node_trees``, never
        pruned while the tree exists."""
        return f"{self.ns}:runs-on:{node}"

    @property
    def deleting(self) -> str:
        """Sorted set of the trees being deleted (root, scored by when it began): a
        deletion cut short by a crash is finished by the next delete or prune."""
        return f"{self.ns}:deleting"

    def logs_gone(self, node: str) -> str:
        """List of the ids of deleted jobs whose log files ``node`` still has to remove
        (space-separated, many per entry); the node empties it as it removes them."""
        return f"{self.ns}:node:{node}:logs-gone"

    @property
    def retention_lock(self) -> str:
        """String with a TTL: the node pruning old trees now (one at a time)."""
        return f"{self.ns}:retention"

    @property
    def nodes(self) -> str:
        """Hash: node name -> JSON record (address, version, concurrency, kinds...)."""
        return f"{self.ns}:nodes"

    def lease(self, node: str) -> str:
        """String with a TTL: the token of the process that holds the node's name."""
        return f"{self.ns}:lease:{node}"

    def epoch(self, node: str) -> str:
        """Integer: the lease epoch of ``node``, +1 at every registration (fencing)."""
        return f"{self.ns}:epoch:{node}"

    def reaper_lock(self, node: str) -> str:
        """String with a TTL: the live node reaping the lost node ``node``."""
        return f"{self.ns}:reaping:{node}"

    # -- channels ------------------------------------------------------------------------
    @property
    def channel_prefix(self) -> str:
        return f"{self.ns}:ch:"

    def node_channel(self, node: str) -> str:
        """Hints for one node: ``{"t": "ready"|"abort"|"done", "root": ...}``."""
        return f"{self.channel_prefix}node:{node}"

    def tree_channel(self, root: str) -> str:
        """Every status change of one tree (``status``, ``abort`` and ``done`` events)."""
        return f"{self.channel_prefix}tree:{root}"

    def done_channel(self, root: str) -> str:
        """Only the tree's ``done`` message (for waiters)."""
        return f"{self.channel_prefix}done:{root}"

    def endpoint_channel(self, node: str) -> str:
        """The endpoint listener's own channel (it keeps the subscription open)."""
        return f"{self.channel_prefix}endpoint:{node}"


def lua_names() -> str:
    """The Lua prelude naming one tree's keys and channels, from ``NS`` (the key
    namespace), ``CH`` (the channel prefix) and ``ROOT``.

    ``K.<part>`` for every part of ``TREE_PARTS``, ``ready_key(node)``,
    ``TREE_CHANNEL``, ``DONE_CHANNEL`` and ``node_channel(node)``: the same names as the
    ``Keys`` methods above.
    """
    lines = ["local T = NS .. ':{' .. ROOT .. '}'", "local K = {"]
    lines += [f"  {part} = T .. ':{part}'," for part in TREE_PARTS]
    lines += [
        "}",
        f"local function ready_key(node) return T .. ':{READY_PART}:' .. node end",
        "local TREE_CHANNEL = CH .. 'tree:' .. ROOT",
        "local DONE_CHANNEL = CH .. 'done:' .. ROOT",
        "local function node_channel(node) return CH .. 'node:' .. node end",
    ]
    return "\n".join(lines) + "\n"
