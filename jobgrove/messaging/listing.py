"""Tree queries: trees matching every given filter, newest first, with a limit and
paging, each with its state derived from all of its jobs.

Each tag value, and each node (the trees with any job assigned to it), has a sorted set
of roots scored by creation time. A query walks the smallest matching index
newest-first, a page at a time, and keeps the roots that are in every other index
(ZMSCORE) — so its cost follows the result size, not the number of trees stored. A
``state`` filter reads the candidates' job states (one HVALS per tree), so it costs
in proportion to the trees it has to look at.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from jobgrove.core.ids import is_job_id
from jobgrove.core.spec import TAG_KEYS
from jobgrove.core.states import State
from jobgrove.core.status import NODE_UNKNOWN, STATE_ORDER, tally, tree_state
from jobgrove.errors import CorruptRecordError, JobgroveError
from jobgrove.messaging.reads import JOB_FIELDS, META_FIELDS, status_record
from jobgrove.messaging.records import to_float
from jobgrove.messaging.redis_errors import refuses_service, translate_errors
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

MAX_LIMIT = 10_000


@dataclasses.dataclass(frozen=True)
class Page:
    trees: list[dict[str, Any]]
    #: Pass back as ``cursor`` for the next (older) page; None when this was the last.
    next_cursor: str | None


@dataclasses.dataclass(frozen=True)
class Digest:
    """One tree at a glance: its derived state, counts per state, and times."""

    tree_state: str
    counts: dict[str, int]
    created: float | None
    #: When the tree was done (root finished, nothing running), else None.
    done: float | None

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from submit until done (or until now, for a tree not done yet)."""
        if self.created is None:
            return None
        end = self.done if self.done is not None else (now or time.time())
        return max(0.0, end - self.created)


def parse_cursor(cursor: str | None) -> tuple[str, str | None]:
    """(max score, root after which to continue) of a page's ``next_cursor``;
    JobgroveError if it is not one."""
    if not cursor:
        return "+inf", None
    score, sep, root = cursor.partition(":")
    try:
        finite = math.isfinite(float(score))
    except ValueError:
        finite = False
    if not sep or not finite or not is_job_id(root):
        raise JobgroveError(f"invalid cursor {cursor[:100]!r} (pass the cursor a previous "
                            "page returned)")
    return score, root


@translate_errors
def digests(store: Store, roots: list[str]) -> dict[str, Digest]:
    """The ``Digest`` of each tree of ``roots`` that exists (one pipeline)."""
    if not roots:
        return {}
    pipe = store.client.pipeline(transaction=False)
    for root in roots:
        pipe.hvals(store.keys.tree_key(root, "state"))
        pipe.hget(store.keys.tree_key(root, "state"), root)
        pipe.hmget(store.keys.tree_key(root, "meta"), ["created", "finished"])
    replies = pipe.execute(raise_on_error=False)
    out = {}
    for i, root in enumerate(roots):
        if _damaged(root, replies[3 * i:3 * i + 3]):
            continue
        states, root_state, (created, done) = replies[3 * i:3 * i + 3]
        if root_state is not None:
            out[root] = _digest(root_state, states, to_float(created), to_float(done))
    return out


def _damaged(root: str, replies: list[Any]) -> bool:
    """A tree whose records Redis cannot read (a hash replaced by a string...) is left
    out of listings, with a warning: one damaged tree must not hide all the others."""
    errors = [r for r in replies if isinstance(r, Exception)]
    for error in errors:
        if refuses_service(error):
            raise error  # an outage, not this tree's fault (translated by the caller)
    if errors:
        log.warning("tree %s left out of the listing: its records cannot be read (%s)",
                    root, errors[0])
    return bool(errors)


def _digest(root_state: str, states: list[str], created: float | None,
            done: float | None) -> Digest:
    counts = tally(states)
    return Digest(tree_state(root_state, counts), counts, created, done)


@translate_errors
def tree_heads(store: Store, roots: list[str]
               ) -> dict[str, tuple[dict[str, Any], list[str], float | None]]:
    """For each existing tree of ``roots`` (one pipeline): the root's status object
    (no children), the states of all its jobs, and when the tree was done (None
    while it is not)."""
    meta_fields = (*META_FIELDS, "finished")
    pipe = store.client.pipeline(transaction=False)
    for root in roots:
        for part in JOB_FIELDS:
            pipe.hget(store.keys.tree_key(root, part), root)
        pipe.hmget(store.keys.tree_key(root, "meta"), meta_fields)
        pipe.hvals(store.keys.tree_key(root, "state"))
    replies = pipe.execute(raise_on_error=False) if roots else []
    step = len(JOB_FIELDS) + 2
    out = {}
    for i, root in enumerate(roots):
        if _damaged(root, replies[i * step:(i + 1) * step]):
            continue
        *values, meta, states = replies[i * step:(i + 1) * step]
        if values[0] is None:
            continue  # an index entry of a tree whose keys were removed
        meta_map = dict(zip(meta_fields, meta))
        record = status_record(root, root, dict(zip(JOB_FIELDS, values)), meta_map)
        del record["child_ids"]
        out[root] = (record, states, to_float(meta_map["finished"]))
    return out


@translate_errors
def waiting_nodes(store: Store, root: str) -> set[str]:
    """The nodes of the tree's ``WAITING`` jobs."""
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(store.keys.tree_key(root, "state"))
    pipe.hgetall(store.keys.tree_key(root, "node"))
    states, nodes = pipe.execute()
    return {nodes[j] for j, s in states.items() if s == State.WAITING and j in nodes}


@translate_errors
def tree_nodes(store: Store, root: str) -> set[str]:
    """The nodes the tree has jobs on."""
    return set(store.client.smembers(store.keys.tree_key(root, "nodes")))


def _check(tags: dict[str, str], limit: int, state: str | None) -> None:
    for key in tags:
        if key not in TAG_KEYS:
            raise JobgroveError(f"unknown tag {key!r} (allowed: {', '.join(TAG_KEYS)})")
    if not 1 <= limit <= MAX_LIMIT:
        raise JobgroveError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if state is not None and state not in STATE_ORDER:
        raise JobgroveError(f"unknown state {state!r} (one of {', '.join(STATE_ORDER)})")


@translate_errors
def list_trees(store: Store, tags: dict[str, str] | None = None, *, limit: int = 50,
               cursor: str | None = None, runs_on: str | None = None,
               state: str | None = None,
               node_states: Mapping[str, str] | None = None) -> Page:
    """Trees whose tags match all of ``tags``, with any job on ``runs_on``, and whose
    derived state is ``state``: root status objects (no children), each with
    ``tree_state``, ``counts`` and ``duration`` (seconds since submit, until done).
    Given ``node_states`` (node name -> up/stopped/lost), a tree whose runnable jobs
    wait for a node that is not up gets ``waiting_for`` ({node: condition})."""
    tags = {k: v for k, v in (tags or {}).items() if v is not None}
    _check(tags, limit, state)
    client = store.client
    keys = [store.keys.tag(k, v) for k, v in sorted(tags.items())]
    if runs_on is not None:
        keys.append(store.keys.runs_on(runs_on))
    keys = keys or [store.keys.trees]
    if len(keys) > 1:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        sizes = pipe.execute()
        keys = [k for _, k in sorted(zip(sizes, keys))]
    driver, others = keys[0], keys[1:]
    max_score, after_root = parse_cursor(cursor)
    found: list[tuple[str, float]] = []
    known: dict[str, Digest] = {}
    batch = max(limit * 2, 100)
    offset = 0
    exhausted = False
    while len(found) < limit and not exhausted:
        page = client.zrevrangebyscore(driver, max_score, "-inf", start=offset, num=batch,
                                       withscores=True)
        offset += len(page)
        exhausted = len(page) < batch
        if after_root is not None:
            # Same score as the cursor: skip up to and including the cursor's root.
            page = [(r, s) for r, s in page if s != float(max_score) or r < after_root]
        if others and page:
            pipe = client.pipeline(transaction=False)
            for key in others:
                pipe.zmscore(key, [r for r, _ in page])
            member = pipe.execute()
            page = [p for i, p in enumerate(page) if all(m[i] is not None for m in member)]
        if state is not None and page:
            known.update(digests(store, [r for r, _ in page]))
            page = [p for p in page if p[0] in known and known[p[0]].tree_state == state]
        found.extend(page)
    found = found[:limit]
    now = time.time()
    trees = []
    for root, (tree, states, done) in tree_heads(store, [r for r, _ in found]).items():
        digest = _digest(tree["state"], states, tree["created"], done)
        tree.update(tree_state=digest.tree_state, counts=digest.counts,
                    duration=digest.duration(now))
        if node_states is not None:
            try:
                tree["waiting_for"] = _waiting_for(store, root, digest, node_states)
            except CorruptRecordError as exc:  # this tree's, not every tree's problem
                log.warning("tree %s: what it waits for cannot be read (%s)", root, exc)
                tree["waiting_for"] = {}
        trees.append(tree)
    next_cursor = f"{found[-1][1]!r}:{found[-1][0]}" if len(found) == limit else None
    return Page(trees, next_cursor)


def _waiting_for(store: Store, root: str, digest: Digest,
                 node_states: Mapping[str, str]) -> dict[str, str]:
    """{node: condition} for the nodes not up that runnable jobs of the tree wait for;
    the tree's jobs are only read when one of its nodes is down."""
    if digest.tree_state != State.WAITING:
        return {}
    down = {n for n in tree_nodes(store, root) if node_states.get(n) != "up"}
    if not down:
        return {}
    return {n: node_states.get(n, NODE_UNKNOWN)
            for n in sorted(waiting_nodes(store, root) & down)}
