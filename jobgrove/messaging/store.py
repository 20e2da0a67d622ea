"""The job store: trees, jobs and their states in Redis.

Redis is the source of truth. Every state change goes through one Lua script
(``scripts.py``) that checks the expected state and applies all of its consequences
atomically, then publishes hints (pub/sub) that tell nodes and viewers to re-read.
Claims and outcomes are fenced on the node process that makes them (``Holder``): a
process that lost its node name to a newer one is refused. A record that cannot be
read fails its job and aborts its tree, so every tree still reaches a final state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import redis

from jobgrove.core.spec import DEFAULT_RETRY_DELAY, MAX_JOBS, JobSpec
from jobgrove.core.states import State
from jobgrove.errors import (
    CorruptRecordError,
    RefusedError,
    StoreUnavailableError,
    UnknownJobError,
)
from jobgrove.messaging import logtails
from jobgrove.messaging.batch import Call
from jobgrove.messaging.reads import StoreReads
from jobgrove.messaging.records import (
    Claim,
    Finish,
    Holder,
    Outcome,
    Verdict,
    decode_claims,
    decode_outcome,
    load_json,
    reported_corrupt,
    safe_outcome,
)
from jobgrove.messaging.redis_errors import refuses_service, translate_errors
from jobgrove.messaging.submit import submit_tree

log = logging.getLogger(__name__)


def spec_json(job: JobSpec) -> str:
    """A job as stored: what it runs, where, its children, and its attempts (only when
    not the defaults, to keep big trees small)."""
    spec: dict[str, Any] = {"id": job.id, "parent": job.parent, "node": job.node,
                            "kind": job.kind, "title": job.title, "params": job.params,
                            "children": list(job.children)}
    if job.retries:
        spec["retries"] = job.retries
    if job.retry_delay != DEFAULT_RETRY_DELAY:
        spec["retry_delay"] = job.retry_delay
    if job.timeout is not None:
        spec["timeout"] = job.timeout
    return json.dumps(spec)


#: Most outcomes of one tree recorded by one script run (bounds how long it runs).
FINISH_BATCH = 200


def _item_reply(reply: Any, n: int) -> Any:
    """Item ``n`` of a batch script's reply; an item's Lua error becomes an exception
    (StoreUnavailableError when it means Redis cannot serve now: replayed later)."""
    try:
        item = reply[n]
    except (IndexError, TypeError, KeyError):
        return redis.exceptions.ResponseError(f"no reply for item {n}: {reply!r:.200}")
    if isinstance(item, list) and len(item) == 2 and item[0] == "error":
        error = redis.exceptions.ResponseError(str(item[1]))
        if refuses_service(error):
            raise StoreUnavailableError(f"Redis unavailable: {error}")
        return error
    return item


class Store(StoreReads):
    """Jobs and trees in Redis (or fakeredis, through the same client API)."""

    # -- writing a tree ----------------------------------------------------------
    @translate_errors
    def submit(self, jobs: list[JobSpec], tags: dict[str, str]) -> str:
        """Store a validated tree (all or nothing) and tell its nodes. Returns the root
        id. Single-slot steps, index entries first (see ``submit.py``)."""
        return submit_tree(self.client, self.keys, jobs, tags, spec_json)

    @translate_errors
    def set_context(self, root: str, key: str, value: Any) -> None:
        self.client.hset(self.keys.tree_key(root, "ctx"), key, json.dumps(value))

    # -- state changes (one Lua script each) --------------------------------------------
    @translate_errors
    def claim(self, root: str, node: str, max_jobs: int,
              holder: Holder | None = None) -> list[Claim]:
        """Move up to ``max_jobs`` runnable jobs of ``root`` on ``node`` to RUNNING, for
        ``holder`` (FencedError if it lost its node name)."""
        if max_jobs <= 0:
            return []
        holder = holder or self.holder
        named = {"node": node, "max": max_jobs, "token_base": self._token_base(),
                 "instance": holder.instance, "epoch": holder.epoch}
        if self.batches.acks:
            # With its WAIT, on the same connection (NotReplicatedError: an outage; the
            # jobs stay RUNNING for this process, recovered by ``reclaim``).
            flat, = self.batches.run([self.script_call("claim", root, named)])
        else:
            flat = self._scripts["claim"](self.keys, root, **named)
        flat = self._reported(root, flat)
        claims, bad = decode_claims(root, flat)
        self._fail_corrupt(root, bad)
        return claims

    @staticmethod
    def _reported(root: str, reply: Any) -> Any:
        """A script's reply without the jobs it failed as corrupt records, logged."""
        reply, failed = reported_corrupt(reply)
        for job_id, why in failed.items():
            log.warning("job %s of tree %s: corrupt record (%s): it ended FAILED and its "
                        "tree aborts", job_id, root, why)
        return reply

    def script_call(self, script: str, root: str, named: dict[str, Any]) -> Call:
        keys, argv = self._scripts[script].call_args(self.keys, root, named)
        return Call(self._scripts[script], keys, argv)

    def _fail_corrupt(self, root: str, bad: dict[str, str]) -> None:
        for job_id, why in bad.items():
            log.warning("job %s of tree %s: corrupt record (%s): it ended FAILED and its "
                        "tree aborts", job_id, root, why)
            self._scripts["fail"](self.keys, root, job=job_id,
                                  summary=f"corrupt record: {why}"[:2000], token="",
                                  instance="")

    @translate_errors
    def fail(self, root: str, job_id: str, summary: str,
             claim: tuple[str, Holder] | None = None) -> Outcome:
        """End a job FAILED (its tree aborts): for a record that cannot be read here.
        ``claim`` (run token, holder): only that claim of the job, if it still runs
        (else the verdict is "stale")."""
        token, instance = ("", "") if claim is None else (claim[0], claim[1].instance)
        return decode_outcome(root, self._scripts["fail"](
            self.keys, root, job=job_id, summary=summary[:2000], token=token,
            instance=instance))

    def _finish_item(self, item: Finish) -> tuple[Any, ...]:
        """The values of one ``finish`` item, in the order of its fields."""
        holder = item.holder or self.holder
        return (item.job_id, item.token, holder.instance, holder.epoch,
                State.SUCCESS if item.ok else State.FAILED, item.summary[:2000],
                "" if item.result is None else json.dumps(item.result), item.reporter,
                self._token_base() if item.claim else "",
                "" if item.attempt is None else str(item.attempt),
                "" if item.run is None else str(item.run),
                "" if item.log_tail is None else logtails.encode(*item.log_tail))

    def _checked(self, root: str, outcome: Outcome) -> Outcome:
        if outcome.corrupt:
            self._fail_corrupt(root, dict([outcome.corrupt]))
        return outcome

    @translate_errors
    def finish(self, root: str, job_id: str, token: str, ok: bool,
               summary: str = "", result: Any = None, holder: Holder | None = None) -> Outcome:
        """Record a RUNNING job's outcome (compare-and-set on its run token and holder)."""
        item = Finish(root, job_id, token, ok, summary, result, holder=holder)
        reply = _item_reply(self._reported(root, self._scripts["finish"](
            self.keys, root, items=[self._finish_item(item)])), 0)
        if isinstance(reply, Exception):
            raise reply
        return self._checked(root, decode_outcome(root, reply))

    @translate_errors
    def finish_many(self, items: list[Finish]) -> list[Outcome]:
        """``finish`` for many jobs: one script run per tree (each job still on its
        own), in one round trip per server (with ``--min-replicas-ack``, acknowledged
        by the replicas or ``NotReplicatedError``). Replaying a batch is safe: a
        second finish of a job is "stale"."""
        by_tree: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_tree.setdefault(item.root, []).append(i)
        groups = [indexes[start:start + FINISH_BATCH] for indexes in by_tree.values()
                  for start in range(0, len(indexes), FINISH_BATCH)]
        calls = [self.script_call("finish", items[group[0]].root,
                                  {"items": [self._finish_item(items[i]) for i in group]})
                 for group in groups]
        replies: list[Any] = [None] * len(items)
        for group, reply in zip(groups, self.batches.run(calls)):
            reply = self._reported(items[group[0]].root, reply)
            for n, i in enumerate(group):
                # A whole-call error (the script failed) is each item's error.
                replies[i] = reply if isinstance(reply, Exception) else _item_reply(reply, n)
        # Each reply on its own: one failing item must not cost the others.
        return [self._checked(item.root, safe_outcome(item.root, reply))
                for item, reply in zip(items, replies)]

    @translate_errors
    def abort(self, job_id: str) -> Outcome:
        """A user abort of any job: acts like its failure (the whole tree stops)."""
        root = self.resolve_root(job_id)
        outcome = decode_outcome(root, self._scripts["abort"](self.keys, root, job=job_id))
        if outcome.verdict is Verdict.UNKNOWN:
            raise UnknownJobError(job_id)
        return outcome

    @translate_errors
    def reap(self, root: str, node: str, summary: str, *, spare: str = "",
             epoch: int | None = None, upto: int | None = None) -> list[str]:
        """End RUNNING jobs of ``root`` on a lost (or restarted, or stopped) ``node``:
        all of them but those claimed by the instance ``spare``. ``epoch`` (of a new
        process of ``node``) fences older processes off in this tree; ``upto``: do
        nothing if a process of ``node`` newer than that epoch has used the tree (it is
        alive and settles the rest). Returns the ids of the jobs ended."""
        return list(self._scripts["reap"](
            self.keys, root, node=node, summary=summary, spare=spare,
            epoch="" if epoch is None else epoch, upto="" if upto is None else upto))

    # -- trees that change ----------------------------------------------------------------
    @translate_errors
    def graft_target(self, job_id: str) -> tuple[str, str, int, int]:
        """What validating a graft under ``job_id`` needs: (root, its node, its depth,
        the tree's size)."""
        root = self.resolve_root(job_id)
        k = self.keys
        node = self.client.hget(k.tree_key(root, "node"), job_id)
        if node is None:
            raise UnknownJobError(job_id)
        depth, up = 1, self.client.hget(k.tree_key(root, "parent"), job_id)
        while up is not None:
            depth += 1
            up = self.client.hget(k.tree_key(root, "parent"), up)
        size = int(self.client.hget(k.tree_key(root, "meta"), "size") or 0)
        return root, str(node), depth, size

    @translate_errors
    def graft(self, root: str, parent: str, jobs: list[JobSpec]) -> list[str]:
        """Add validated subtrees under ``parent`` (one atomic step in the tree; the
        cross-tree indexes first, idempotent). Returns the new subtree roots' ids;
        RefusedError if the parent has started or finished, or the tree is aborting."""
        k = self.keys
        nodes = sorted({j.node for j in jobs})
        created = float(self.client.hget(k.tree_key(root, "meta"), "created") or 0)
        self._index_on(nodes, root, created, [j.id for j in jobs])
        payload = json.dumps([[j.id, j.parent, j.node, spec_json(j), len(j.children)]
                              for j in jobs])
        reply = self._scripts["graft"](k, root, parent=parent, jobs=payload, limit=MAX_JOBS)
        if reply[0] != "ok":
            # Nothing was added: neither are the index entries, but those of nodes the
            # tree has jobs on (a graft that landed meanwhile needs them; it writes them
            # again after its own script, below, so a race loses none).
            self.client.hdel(k.roots, *(j.id for j in jobs))
            self.client.zrem(k.ids, *(j.id for j in jobs))
            unused = set(nodes) - self.client.smembers(k.tree_key(root, "nodes"))
            pipe = self.client.pipeline(transaction=False)
            for node in unused:
                pipe.srem(k.node_trees(node), root)
                pipe.zrem(k.runs_on(node), root)
            pipe.execute()
            # A graft that landed meanwhile on one of those nodes: its entries back.
            back = unused & self.client.smembers(k.tree_key(root, "nodes"))
            if back:
                self._index_on(back, root, created, [])
            raise RefusedError(f"cannot graft under {parent}: {reply[1]}")
        try:
            self._index_on(nodes, root, created, [])
        except Exception as exc:  # the graft has landed: it must not read as failed
            log.warning("graft under %s: index entries not written again (%s); the "
                        "ones written before it stand", parent, exc)
        return [j.id for j in jobs if j.parent == parent]

    def _index_on(self, nodes: Iterable[str], root: str, created: float,
                  ids: list[str]) -> None:
        """The cross-tree index entries of grafted jobs (idempotent, single-key steps)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.hset(k.roots, mapping={i: root for i in ids})
            pipe.zadd(k.ids, {i: 0 for i in ids})
        for node in nodes:
            pipe.sadd(k.node_trees(node), root)
            pipe.zadd(k.runs_on(node), {root: created})
        pipe.execute()

    @translate_errors
    def rerun(self, job_id: str) -> tuple[str, int]:
        """Run again what did not succeed in the done tree of ``job_id``. Returns (root,
        the new run number); RefusedError while a job runs or if the tree succeeded."""
        root = self.resolve_root(job_id)
        k = self.keys
        # The nodes forgot the tree when it was done: tell them it has work again
        # (idempotent, before the script, so no node can miss it).
        nodes = self.client.smembers(k.tree_key(root, "nodes"))
        self._remember_on(nodes, root)
        reply = self._scripts["rerun"](k, root)
        if reply[0] != "ok":
            raise RefusedError(f"cannot rerun tree {root}: {reply[1]}")
        # Again after: a node that saw the tree done just before may have dropped it
        # from its set meanwhile (it re-reads the tree first, so only just before).
        self._remember_on(nodes, root)
        return root, int(reply[1])

    def _remember_on(self, nodes: Iterable[str], root: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for node in nodes:
            pipe.sadd(self.keys.node_trees(node), root)
        pipe.execute()

    @translate_errors
    def set_progress(self, root: str, job_id: str, token: str, fraction: float,
                     message: str | None) -> bool:
        """Store a running job's progress (False: that run is over)."""
        progress = json.dumps({"fraction": fraction, "message": message})
        return bool(self._scripts["progress"](self.keys, root, job=job_id, token=token,
                                              progress=progress))

    # -- what nodes recover and undo ----------------------------------------------------
    @translate_errors
    def reclaim(self, root: str, job_id: str, holder: Holder) -> Claim | None:
        """The claim of a job RUNNING in Redis for ``holder`` whose claim reply was lost
        (see ``NodeActor._reclaim``): same token, spec, children's results, context.
        None if it is not (or no longer) that; a record that cannot be read fails the
        job instead."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        for part in ("state", "token", "spec", "owner"):
            pipe.hget(k.tree_key(root, part), job_id)
        state, token, raw_spec, owner = pipe.execute()
        if state != State.RUNNING or owner != holder.instance:
            return None
        if self.batches.acks:
            # Run it only once the replicas have its claim: the claim may be one that was
            # not acknowledged (NotReplicatedError when they still lack it).
            owned, = self.batches.run([self.script_call(
                "own", root, {"job": job_id, "instance": holder.instance})])
            if owned != 1:
                return None
        try:
            if token is None:
                raise CorruptRecordError(f"run token of job {job_id} is missing")
            spec = load_json(raw_spec or "", f"spec of job {job_id}")
            if not isinstance(spec, dict) or not isinstance(spec.get("children", []), list):
                raise CorruptRecordError(f"spec of job {job_id} is not a job spec")
            grafted = self.client.hget(k.tree_key(root, "grafted"), job_id)
            spec["children"] = [*spec.get("children", []),
                                *load_json(grafted or "[]", f"grafted children of {job_id}")]
            attempt = int(self.client.hget(k.tree_key(root, "attempt"), job_id) or 1)
            run = int(self.client.hget(k.tree_key(root, "meta"), "run") or 1)
            return Claim(root, job_id, token, spec,
                         self.results(root, spec.get("children", [])), self.context(root),
                         attempt, run)
        except CorruptRecordError as exc:
            self.fail(root, job_id, f"corrupt record: {exc}")
            return None

    @translate_errors
    def claim_undo(self, root: str, node: str, kinds: set[str], limit: int) -> list[str]:
        """Up to ``limit`` SUCCESS jobs of an aborted tree on ``node`` whose kind is in
        ``kinds`` (kinds with an undo hook), each claimed once cluster-wide (HSETNX), so
        its hook runs exactly once."""
        if not kinds or not self.aborting(root):
            return []
        ids = [j["id"] for j in self.tree_flat(root).values()
               if j["state"] == State.SUCCESS and j["node"] == node and j["kind"] in kinds]
        undone = self.keys.tree_key(root, "undone")
        claimed: list[str] = []
        for job_id in ids:
            if len(claimed) >= limit:
                break
            if self.client.hsetnx(undone, job_id, node):
                claimed.append(job_id)
        return claimed

    @translate_errors
    def forget_node_tree(self, node: str, root: str) -> None:
        self.client.srem(self.keys.node_trees(node), root)
