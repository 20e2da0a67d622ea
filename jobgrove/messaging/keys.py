"""Redis key and channel names. One tree's keys all share the hash tag ``{root}``."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Keys:
    """Names under one namespace (default ``jg``), so several clusters can share a Redis."""

    ns: str = "jg"

    def tree(self, root: str) -> str:
        """Prefix of every key of one tree; scripts derive the rest from it."""
        return f"{self.ns}:{{{root}}}"

    def tree_key(self, root: str, part: str) -> str:
        return f"{self.ns}:{{{root}}}:{part}"

    @property
    def channel_prefix(self) -> str:
        return f"{self.ns}:ch:"

    def node_channel(self, node: str) -> str:
        return f"{self.ns}:ch:node:{node}"

    def tree_channel(self, root: str) -> str:
        return f"{self.ns}:ch:tree:{root}"

    def done_channel(self, root: str) -> str:
        """Only the tree's ``done`` message (for waiters)."""
        return f"{self.ns}:ch:done:{root}"

    @property
    def roots(self) -> str:
        """Hash: any job id -> its tree's root id."""
        return f"{self.ns}:root"

    @property
    def trees(self) -> str:
        """Sorted set of every tree's root, scored by creation time."""
        return f"{self.ns}:trees"

    def tag(self, key: str, value: str) -> str:
        return f"{self.ns}:tag:{key}:{value}"

    def node_trees(self, node: str) -> str:
        """Set of trees that have (or had) jobs on ``node``."""
        return f"{self.ns}:node:{node}:trees"

    @property
    def nodes(self) -> str:
        """Hash: node name -> JSON record (address, version, concurrency, kinds...)."""
        return f"{self.ns}:nodes"

    def lease(self, node: str) -> str:
        return f"{self.ns}:lease:{node}"

    def reaper_lock(self, node: str) -> str:
        return f"{self.ns}:reaping:{node}"
