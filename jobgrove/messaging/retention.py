"""Deleting done trees: one (``delete``), or every tree whose root finished before a
cutoff (``prune``), in bounded batches so that Redis never blocks.

Deleting a tree, step by step (each step idempotent, none spanning two trees, so the
same code runs on Redis Cluster):

1. the root goes into the ``deleting`` set (the intent);
2. the tree's ``delete`` script (``lua/delete.lua``), one atomic step in the tree's
   own hash slot: refused while a job runs or the tree is not done; otherwise every key
   of the tree goes at once but one, renamed ``doomed``: job id -> node, and the tags;
3. from ``doomed``: the job ids leave the id index, the root leaves the tree index, its
   tag indexes and its nodes' tree and runs-on sets, and each registered node gets the ids of its
   jobs on its ``logs-gone`` list (it removes their log files, see ``Janitor``);
4. ``doomed`` goes, then the intent.

A deletion cut short (a crash, Redis gone) leaves its root in ``deleting``: the next
``delete`` or ``prune``, from any machine, runs the steps again for it (``recover``),
which finishes it whichever step it stopped at. A refused deletion removes its intent.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jobgrove.core.ids import is_job_id
from jobgrove.errors import JobgroveError, NodeBusyError, TreeBusyError
from jobgrove.messaging.redis_errors import translate_errors
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store

#: Trees deleted per round trip (each still by its own script).
BATCH = 100
#: Trees read per page of the tree index while looking for old ones.
PAGE = 500
#: Job ids per command or list entry when a tree's indexes are cleaned.
_CHUNK = 1000
#: Half-deleted trees finished per ``recover`` call.
RECOVER_MAX = 1000

_LOCK_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_LOCK_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclasses.dataclass(frozen=True)
class PruneResult:
    """What a prune deleted, or (``dry_run``) would delete."""

    trees: list[str]
    dry_run: bool = False

    @property
    def count(self) -> int:
        return len(self.trees)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why the delete script left a tree alone."""

    why: str  # 'running', 'not_done', or 'error'
    detail: str


class Retention:
    """Deleting trees from the store: ``delete``, ``prune``, ``recover``; the nodes'
    lists of log files to remove; the lock that lets one node prune at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client: Any = store.client
        self.keys = store.keys
        self._renew = self.client.register_script(_LOCK_RENEW)
        self._release = self.client.register_script(_LOCK_RELEASE)

    # -- deleting -------------------------------------------------------------------------
    @translate_errors
    def delete(self, job_id: str) -> str:
        """Delete the done tree of ``job_id`` (any job of it); returns its root. Raises
        UnknownJobError, or TreeBusyError while a job runs or the tree is not done.
        Finishes deletions that others left half-done, too."""
        root = self.store.resolve_root(job_id)
        _, refused = self.delete_batch([root])
        if root in refused:
            raise TreeBusyError(_refusal_text(root, refused[root]))
        self.recover()
        return root

    @translate_errors
    def delete_batch(self, roots: list[str]) -> tuple[list[str], dict[str, Refusal]]:
        """Delete these trees (done ones; the others are refused and left alone), a
        few round trips for the lot. Returns (deleted, refused)."""
        if not roots:
            return [], {}
        now = _server_time(self.client)
        self.client.zadd(self.keys.deleting, {root: now for root in roots})
        replies = self._run_scripts(roots)
        deleted: dict[str, dict[str, str] | None] = {}  # root -> doomed, if in the reply
        refused: dict[str, Refusal] = {}
        for root, reply in zip(roots, replies):
            if isinstance(reply, Exception):
                refused[root] = Refusal("error", str(reply))
            elif reply and reply[0] == "ok":
                pairs = reply[1:]
                deleted[root] = dict(zip(pairs[::2], pairs[1::2])) if pairs else None
            elif reply and reply[0] == "gone":
                deleted[root] = None
            else:
                refused[root] = Refusal(str(reply[0]), str(reply[1]) if len(reply) > 1 else "")
        if refused:
            self.client.zrem(self.keys.deleting, *refused)
        self._clean(deleted)
        return list(deleted), refused

    def _run_scripts(self, roots: list[str]) -> list[Any]:
        """The delete script on each tree, one round trip per server (each reply on its
        own; StoreUnavailableError if Redis cannot serve now)."""
        return self.store.batches.run([self.store.script_call("delete", root,
                                                              {"inline": _CHUNK})
                                       for root in roots])

    def _clean(self, trees: dict[str, dict[str, str] | None]) -> None:
        """Steps 3 and 4 for trees whose keys are gone but ``doomed`` (given for the
        small ones: the delete script's reply), in one pipeline. The index entries go
        first, ``doomed`` and the intents last, so that a pipeline cut short leaves
        every root still to clean in ``deleting``."""
        if not trees:
            return
        k = self.keys
        doomed = {root: d if d is not None else
                  dict(self.client.hscan_iter(k.tree_key(root, "doomed"), count=_CHUNK))
                  for root, d in trees.items()}
        ids: list[str] = []
        by_tag: dict[str, list[str]] = {}
        node_trees: dict[str, list[str]] = {}
        node_jobs: dict[str, list[str]] = {}
        for root, fields in doomed.items():
            ids.append(root)
            nodes: set[str] = set()
            for job_id, node in fields.items():
                if is_job_id(job_id):
                    if job_id != root:
                        ids.append(job_id)
                    node_jobs.setdefault(node, []).append(job_id)
                    nodes.add(node)
            for node in nodes:
                node_trees.setdefault(node, []).append(root)
            for tag_key in _tag_keys(fields.get("tags")):
                by_tag.setdefault(tag_key, []).append(root)
        registered = self._registered(node_jobs)
        pipe = self.client.pipeline(transaction=False)
        for start in range(0, len(ids), _CHUNK):
            pipe.hdel(k.roots, *ids[start:start + _CHUNK])
            pipe.zrem(k.ids, *ids[start:start + _CHUNK])
        roots = list(doomed)
        pipe.zrem(k.trees, *roots)
        for (key, value), members in ((json.loads(t), m) for t, m in by_tag.items()):
            pipe.zrem(k.tag(key, value), *members)
        for node, members in node_trees.items():
            pipe.srem(k.node_trees(node), *members)
            pipe.zrem(k.runs_on(node), *members)
        for node, jobs in node_jobs.items():
            if node in registered:
                for start in range(0, len(jobs), _CHUNK):
                    pipe.rpush(k.logs_gone(node), " ".join(jobs[start:start + _CHUNK]))
        for root in roots:  # one key per command: each tree has its own hash slot
            pipe.unlink(k.tree_key(root, "doomed"))
        pipe.zrem(k.deleting, *roots)
        pipe.execute()

    def _registered(self, nodes: Iterable[str]) -> set[str]:
        names = sorted(nodes)
        if not names:
            return set()
        present = self.client.hmget(self.keys.nodes, names)
        return {n for n, raw in zip(names, present) if raw is not None}

    @translate_errors
    def recover(self, limit: int = RECOVER_MAX) -> list[str]:
        """Finish deletions cut short (roots left in ``deleting``); returns those
        deleted now."""
        roots = list(self.client.zrange(self.keys.deleting, 0, limit - 1))
        deleted: list[str] = []
        for start in range(0, len(roots), BATCH):
            deleted += self.delete_batch(roots[start:start + BATCH])[0]
        return deleted

    # -- pruning ---------------------------------------------------------------------------
    @translate_errors
    def prune(self, older_than: float, *, dry_run: bool = False,
              archive: Callable[[str], None] | None = None, batch: int = BATCH,
              pause: float = 0.0, go_on: Callable[[], bool] | None = None) -> PruneResult:
        """Delete the done trees whose root finished more than ``older_than`` seconds
        ago (Redis's clock), ``batch`` trees per round trip. ``archive(root)`` is called
        for each before it is deleted; ``pause`` seconds are waited between batches;
        ``go_on()`` false stops early. ``dry_run``: only list them."""
        if older_than < 0:
            raise ValueError(f"older_than must be >= 0, got {older_than}")
        if not dry_run:
            self.recover()
        cutoff = _server_time(self.client) - older_than
        found: list[str] = []
        for roots in self.old_trees(cutoff, batch):
            if dry_run:
                found += roots
                continue
            if archive is not None:
                for root in roots:
                    archive(root)
            found += self.delete_batch(roots)[0]
            if go_on is not None and not go_on():
                break
            if pause:
                time.sleep(pause)
        return PruneResult(found, dry_run)

    def old_trees(self, cutoff: float, batch: int = BATCH) -> Iterator[list[str]]:
        """Done trees whose root finished before ``cutoff``, oldest created first, in
        lists of up to ``batch``. Walks the tree index by creation time (a tree that
        finished before the cutoff was created before it), a page at a time."""
        low = "-inf"
        while True:
            page = self.client.zrangebyscore(self.keys.trees, low, cutoff, start=0,
                                             num=PAGE, withscores=True)
            if not page:
                return
            full = len(page) == PAGE
            if full:
                # The last score may go on past the page: take all of its trees now.
                last = page[-1][1]
                page = [p for p in page if p[1] != last] + [
                    (r, last) for r in self.client.zrangebyscore(self.keys.trees, last, last)]
                low = f"({last!r}"
            pipe = self.client.pipeline(transaction=False)
            for root, _ in page:
                pipe.hget(self.keys.tree_key(root, "meta"), "finished")
            finished = pipe.execute()
            old = [root for (root, _), done in zip(page, finished)
                   if done is not None and _float(done) < cutoff]
            for start in range(0, len(old), batch):
                yield old[start:start + batch]
            if not full:
                return

    # -- what nodes do about deleted trees -------------------------------------------------
    @translate_errors
    def gone_logs(self, node: str, entries: int = 10) -> tuple[list[str], int]:
        """Ids of deleted jobs whose log files ``node`` should remove, from the first
        ``entries`` entries of its list; (ids, entries read). ``ack`` them once done."""
        raw = self.client.lrange(self.keys.logs_gone(node), 0, entries - 1)
        return [j for entry in raw for j in entry.split() if is_job_id(j)], len(raw)

    @translate_errors
    def ack_gone_logs(self, node: str, entries: int) -> None:
        if entries > 0:
            self.client.ltrim(self.keys.logs_gone(node), entries, -1)

    # -- forgetting a node ---------------------------------------------------------------------
    @translate_errors
    def forget_node(self, registry: Registry, name: str) -> None:
        """Remove a stopped or lost node that runs nothing and has nothing left to run.
        Raises JobgroveError (no such node), or NodeBusyError (a live process holds the name, or
        trees not done have jobs on it)."""
        record = registry.record(name)
        if record is None:
            raise JobgroveError(f"no node named {name!r} is registered (`jobgrove nodes` "
                                "lists them)")
        if registry.lease_held(name):
            raise NodeBusyError(f"node {name} is up (a live process holds its name): stop "
                                "it first; only stopped or lost nodes can be forgotten")
        busy = [root for root, flags in self.store.tree_flags(name).items()
                if flags is not None and not flags[0]]
        running = [job for root in busy for job in self.store.running_on(root, name)]
        if running:
            raise NodeBusyError(
                f"node {name} still has {len(running)} RUNNING job(s) ({', '.join(running[:3])}"
                f"{', ...' if len(running) > 3 else ''}): they end once a live node reaps "
                "it (within one lease)")
        if busy:
            raise NodeBusyError(
                f"trees not done have jobs on node {name} ({', '.join(busy[:3])}"
                f"{', ...' if len(busy) > 3 else ''}): abort them (`jobgrove abort ID`) or "
                "start the node again, then forget it")
        registry.forget(name)

    # -- one node prunes at a time -----------------------------------------------------------
    @translate_errors
    def lock(self, node: str, ttl: float) -> bool:
        return bool(self.client.set(self.keys.retention_lock, node, nx=True,
                                    px=max(1, int(ttl * 1000))))

    @translate_errors
    def relock(self, node: str, ttl: float) -> bool:
        """Extend the lock if ``node`` still holds it."""
        return bool(self._renew(keys=[self.keys.retention_lock],
                                args=[node, max(1, int(ttl * 1000))]))

    @translate_errors
    def unlock(self, node: str) -> None:
        self._release(keys=[self.keys.retention_lock], args=[node])


@translate_errors
def tree_counts(store: Store) -> tuple[int, int]:
    """(trees stored, tree deletions begun and not finished)."""
    pipe = store.client.pipeline(transaction=False)
    pipe.zcard(store.keys.trees)
    pipe.zcard(store.keys.deleting)
    trees, deleting = pipe.execute()
    return int(trees), int(deleting)


def _tag_keys(raw: str | None) -> list[str]:
    """The tags of a tree (its stored JSON) as JSON pairs ``[key, value]``."""
    try:
        tags = json.loads(raw or "{}")
    except ValueError:
        return []
    if not isinstance(tags, dict):
        return []
    return [json.dumps([str(k), str(v)]) for k, v in tags.items()]


def _server_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return float("inf")  # unreadable: never old enough


def _refusal_text(root: str, refusal: Refusal) -> str:
    if refusal.why == "running":
        return (f"tree {root} has {refusal.detail} RUNNING job(s): it can be deleted once "
                f"they end (stop them with `jobgrove abort {root}`)")
    if refusal.why == "not_done":
        return (f"tree {root} is not done (root {refusal.detail or 'unknown'}): abort it "
                f"first (`jobgrove abort {root}`), then delete it")
    return f"tree {root} cannot be deleted: {refusal.detail}"
