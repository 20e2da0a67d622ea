"""The job store: trees, jobs and their states in Redis.

Redis is the source of truth. Every state change goes through one Lua script
(``scripts.py``) that checks the expected state and applies all of its consequences
atomically, then publishes hints (pub/sub) that tell nodes and viewers to re-read.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterable
from typing import Any

import redis

from jobgrove.core.ids import is_job_id
from jobgrove.core.spec import JobSpec
from jobgrove.core.states import State
from jobgrove.core.status import nest_status
from jobgrove.errors import (
    StoreUnavailableError,
    UnknownJobError,
)
from jobgrove.messaging.ids import resolve_id
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.pubsub import Hints
from jobgrove.messaging.records import (
    Claim,
    Finish,
    Outcome,
    Verdict,
    decode_claims,
    decode_outcome,
    load_json,
    safe_outcome,
    to_float,
)
from jobgrove.messaging.redis_errors import refuses_service, translate_errors
from jobgrove.messaging.scripts import register_scripts

_CHUNK = 2000  # fields per HSET, so a 100,000-job submit is not one giant command
_PER_JOB = ("state", "node", "parent", "spec", "started", "finished", "summary", "cause")


def _status(job_id: str, root: str, state: str, node: str | None, parent: str | None,
            spec: str | None, started: str | None, finished: str | None,
            summary: str | None, cause: str | None, created: float | None,
            tags: dict[str, str]) -> dict[str, Any]:
    """One job's status object (the contract's shape, ``child_ids`` for children)."""
    job_spec = load_json(spec or "", f"job {job_id} spec")
    return {"id": job_id, "root": root, "parent": parent, "node": node,
            "kind": job_spec.get("kind"), "title": job_spec.get("title"), "state": state,
            "summary": summary, "cause": cause, "created": created,
            "started": to_float(started), "finished": to_float(finished),
            "tags": tags if job_id == root else {},
            "child_ids": job_spec.get("children", [])}


#: For readers outside this module that build the same status objects (``listing``).
status_record, JOB_FIELDS = _status, _PER_JOB


class Store:
    """Jobs and trees in Redis (or fakeredis, through the same client API)."""

    def __init__(self, client: Any, keys: Keys | None = None) -> None:
        # A redis-py client (or fakeredis) with decode_responses=True: typed Any, since
        # redis-py's annotations cannot express "decoded" (every reply is bytes | str).
        self.client: Any = client
        self.keys = keys or Keys()
        self._scripts = register_scripts(client)
        # Run tokens only need to be unique: a random prefix per store and a counter are
        # cheaper than a uuid4 per claim.
        self._token_prefix = uuid.uuid4().hex[:16]
        self._token_count = itertools.count()

    def _token_base(self) -> str:
        return f"{self._token_prefix}{next(self._token_count):x}"

    # -- connections -------------------------------------------------------------
    def pubsub(self, **kwargs: Any) -> Any:
        """A new pub/sub connection (for ``pubsub.Listener``)."""
        return self.client.pubsub(**kwargs)

    def tree_hints(self, root: str) -> Hints:
        """A subscription to every change of one tree (hints to re-read it)."""
        return Hints(self, [self.keys.tree_channel(root)])

    def done_hints(self, root: str) -> Hints:
        """A subscription to the tree's ``done`` message only."""
        return Hints(self, [self.keys.done_channel(root)])

    @translate_errors
    def ping(self) -> bool:
        return bool(self.client.ping())

    # -- writing a tree ----------------------------------------------------------
    @translate_errors
    def submit(self, jobs: list[JobSpec], tags: dict[str, str]) -> str:
        """Store a validated tree (all or nothing) and tell its nodes. Returns the root id."""
        root = jobs[0].id
        k = self.keys
        seconds, micros = self.client.time()  # the server's clock, as the scripts use
        now = seconds + micros / 1e6
        pipe = self.client.pipeline(transaction=True)

        def hset_chunks(key: str, items: Iterable[tuple[str, Any]]) -> None:
            batch: dict[str, Any] = {}
            for field, value in items:
                batch[field] = value
                if len(batch) >= _CHUNK:
                    pipe.hset(key, mapping=batch)
                    batch = {}
            if batch:
                pipe.hset(key, mapping=batch)

        def tk(part: str) -> str:
            return k.tree_key(root, part)

        hset_chunks(tk("spec"), ((j.id, json.dumps({
            "id": j.id, "parent": j.parent, "node": j.node, "kind": j.kind,
            "title": j.title, "params": j.params, "children": list(j.children)}))
            for j in jobs))
        hset_chunks(tk("state"), ((j.id, State.NEW if j.children else State.WAITING) for j in jobs))
        hset_chunks(tk("node"), ((j.id, j.node) for j in jobs))
        hset_chunks(tk("parent"), ((j.id, j.parent) for j in jobs if j.parent))
        hset_chunks(tk("pending"), ((j.id, len(j.children)) for j in jobs if j.children))
        hset_chunks(k.roots, ((j.id, root) for j in jobs))
        for start in range(0, len(jobs), _CHUNK):
            pipe.sadd(tk("open"), *(j.id for j in jobs[start:start + _CHUNK]))
        leaves: dict[str, list[str]] = {}
        for j in jobs:
            if not j.children:
                leaves.setdefault(j.node, []).append(j.id)
        # Deepest leaves first: the order within a node's ready list is the start order.
        for node, ids in leaves.items():
            for start in range(0, len(ids), _CHUNK):
                pipe.rpush(k.ready(root, node), *ids[start:start + _CHUNK])
        nodes = sorted({j.node for j in jobs})
        pipe.sadd(tk("nodes"), *nodes)
        pipe.hset(tk("meta"), mapping={
            "root": root, "title": jobs[0].title, "created": repr(now),
            "tags": json.dumps(tags), "size": len(jobs)})
        pipe.zadd(k.trees, {root: now})
        for start in range(0, len(jobs), _CHUNK):
            pipe.zadd(k.ids, {j.id: 0 for j in jobs[start:start + _CHUNK]})
        for node in nodes:
            pipe.zadd(k.runs_on(node), {root: now})
        for key, value in tags.items():
            pipe.zadd(k.tag(key, value), {root: now})
        for node in nodes:
            pipe.sadd(k.node_trees(node), root)
        hint = json.dumps({"t": "ready", "root": root})
        for node in leaves:
            pipe.publish(k.node_channel(node), hint)
        pipe.execute()
        return root

    # -- reading -------------------------------------------------------------------
    def resolve_id(self, text: str) -> str:
        """The job id ``text`` stands for: a full id, or a unique prefix (``ids``)."""
        return resolve_id(self.client, self.keys, text)

    @translate_errors
    def resolve_root(self, job_id: str) -> str:
        """The root of the tree of ``job_id`` (a job id or a unique prefix of one)."""
        if isinstance(job_id, str) and not is_job_id(job_id):
            job_id = self.resolve_id(job_id)
        root = self.client.hget(self.keys.roots, job_id) if isinstance(job_id, str) else None
        if root is None:
            raise UnknownJobError(job_id)
        return str(root)

    @translate_errors
    def tree_flat(self, root: str) -> dict[str, dict[str, Any]]:
        """Every job of the tree as a flat status object (``child_ids`` instead of children)."""
        pipe = self.client.pipeline(transaction=False)
        for part in _PER_JOB:
            pipe.hgetall(self.keys.tree_key(root, part))
        pipe.hgetall(self.keys.tree_key(root, "meta"))
        state, node, parent, spec, started, finished, summary, cause, meta = pipe.execute()
        if not state:
            raise UnknownJobError(root)
        created = to_float(meta.get("created"))
        tags = load_json(meta.get("tags", "{}"), f"tree {root} tags")
        return {job_id: _status(job_id, root, job_state, node.get(job_id), parent.get(job_id),
                                spec.get(job_id), started.get(job_id), finished.get(job_id),
                                summary.get(job_id), cause.get(job_id), created, tags)
                for job_id, job_state in state.items()}

    def tree_status(self, job_id: str) -> dict[str, Any]:
        """The whole tree of any of its jobs, nested (the contract's status JSON)."""
        root = self.resolve_root(job_id)
        return nest_status(self.tree_flat(root), root)

    @translate_errors
    def job_state(self, job_id: str) -> str:
        job_id = self.resolve_id(job_id)
        root = self.resolve_root(job_id)
        state = self.client.hget(self.keys.tree_key(root, "state"), job_id)
        if state is None:
            raise UnknownJobError(job_id)
        return str(state)

    @translate_errors
    def job_status(self, job_id: str) -> dict[str, Any]:
        """One job's status object, without children."""
        job_id = self.resolve_id(job_id)
        root = self.resolve_root(job_id)
        pipe = self.client.pipeline(transaction=False)
        for part in _PER_JOB:
            pipe.hget(self.keys.tree_key(root, part), job_id)
        pipe.hmget(self.keys.tree_key(root, "meta"), ["created", "tags"])
        state, node, parent, spec, started, finished, summary, cause, meta = pipe.execute()
        if state is None:
            raise UnknownJobError(job_id)
        tags = load_json(meta[1] or "{}", "tags") if job_id == root else {}
        record = _status(job_id, root, state, node, parent, spec, started, finished, summary,
                         cause, to_float(meta[0]), tags)
        del record["child_ids"]
        return record

    @translate_errors
    def tree_finished(self, root: str) -> bool:
        return bool(self.client.hexists(self.keys.tree_key(root, "meta"), "finished"))

    @translate_errors
    def aborting(self, root: str) -> bool:
        return bool(self.client.hexists(self.keys.tree_key(root, "meta"), "abort_cause"))

    @translate_errors
    def results(self, root: str, ids: Iterable[str]) -> dict[str, Any]:
        """The stored results of SUCCESS jobs (JSON values), by id."""
        ids = list(ids)
        if not ids:
            return {}
        raw = self.client.hmget(self.keys.tree_key(root, "results"), ids)
        return {i: load_json(r, f"result of {i}") for i, r in zip(ids, raw) if r is not None}

    @translate_errors
    def context(self, root: str) -> dict[str, Any]:
        raw = self.client.hgetall(self.keys.tree_key(root, "ctx"))
        return {key: load_json(value, f"context {key}") for key, value in raw.items()}

    @translate_errors
    def set_context(self, root: str, key: str, value: Any) -> None:
        self.client.hset(self.keys.tree_key(root, "ctx"), key, json.dumps(value))

    @translate_errors
    def running_on(self, root: str, node: str) -> dict[str, str | None]:
        """RUNNING jobs of ``root`` on ``node``: id -> abort cause (None if not asked)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.tree_key(root, "running"))
        pipe.hgetall(self.keys.tree_key(root, "abort"))
        running, aborts = pipe.execute()
        return {i: aborts.get(i) for i, n in running.items() if n == node}

    @translate_errors
    def job_spec(self, root: str, job_id: str) -> dict[str, Any]:
        """What a job was submitted as: kind, title, params, children ids."""
        raw = self.client.hget(self.keys.tree_key(root, "spec"), job_id)
        if raw is None:
            raise UnknownJobError(job_id)
        spec: dict[str, Any] = load_json(raw, f"job {job_id} spec")
        return spec

    @translate_errors
    def reclaim(self, root: str, job_id: str) -> Claim | None:
        """The claim of a job RUNNING in Redis whose claim reply was lost (see
        ``NodeActor._reclaim``): same token, spec, children's results, context."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(k.tree_key(root, "state"), job_id)
        pipe.hget(k.tree_key(root, "token"), job_id)
        pipe.hget(k.tree_key(root, "spec"), job_id)
        state, token, raw_spec = pipe.execute()
        if state != State.RUNNING or token is None or raw_spec is None:
            return None
        spec = load_json(raw_spec, f"job {job_id} spec")
        return Claim(root, job_id, token, spec, self.results(root, spec.get("children", [])),
                     self.context(root))

    @translate_errors
    def node_trees(self, node: str) -> set[str]:
        return set(self.client.smembers(self.keys.node_trees(node)))

    @translate_errors
    def tree_flags(self, node: str) -> dict[str, tuple[bool, bool]]:
        """For each tree with jobs on ``node``: (finished, aborting)."""
        roots = sorted(self.node_trees(node))
        if not roots:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for root in roots:
            meta = self.keys.tree_key(root, "meta")
            pipe.hexists(meta, "finished")
            pipe.hexists(meta, "abort_cause")
        flags = pipe.execute()
        return {root: (bool(flags[2 * i]), bool(flags[2 * i + 1]))
                for i, root in enumerate(roots)}

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

    # -- state changes (one Lua script each) --------------------------------------------
    @translate_errors
    def claim(self, root: str, node: str, max_jobs: int) -> list[Claim]:
        """Move up to ``max_jobs`` runnable jobs of ``root`` on ``node`` to RUNNING."""
        if max_jobs <= 0:
            return []
        flat = self._scripts["claim"](self.keys, root, node=node, max=max_jobs,
                                      token_base=self._token_base())
        return decode_claims(root, flat)

    def _finish_args(self, item: Finish) -> dict[str, Any]:
        return {
            "job": item.job_id, "token": item.token,
            "outcome": State.SUCCESS if item.ok else State.FAILED, "summary": item.summary[:2000],
            "result": "" if item.result is None else json.dumps(item.result),
            "reporter": item.reporter,
            "claim_token": self._token_base() if item.claim else ""}

    @translate_errors
    def finish(self, root: str, job_id: str, token: str, ok: bool,
               summary: str = "", result: Any = None) -> Outcome:
        """Record a RUNNING job's outcome (compare-and-set on its run token)."""
        named = self._finish_args(Finish(root, job_id, token, ok, summary, result))
        return decode_outcome(root, self._scripts["finish"](self.keys, root, **named))

    @translate_errors
    def finish_many(self, items: list[Finish]) -> list[Outcome]:
        """``finish`` for many jobs in one round trip (each still its own atomic script)."""
        script = self._scripts["finish"]
        for attempt in (1, 2):
            # EVALSHA directly: redis-py's script-in-pipeline costs a SCRIPT EXISTS
            # round trip per batch; a NOSCRIPT (server restarted) reloads and retries.
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                keys, argv = script.call_args(self.keys, item.root, self._finish_args(item))
                pipe.evalsha(script.sha, len(keys), *keys, *argv)
            # Each reply on its own: one failing script must not cost the others.
            replies = pipe.execute(raise_on_error=False)
            errors = [r for r in replies if isinstance(r, Exception)]
            if any(isinstance(e, redis.exceptions.NoScriptError) for e in errors) \
                    and attempt == 1:
                self.client.script_load(script.text)
                continue  # replaying is safe: a second finish of a job is "stale"
            for error in errors:
                if isinstance(error, (redis.ConnectionError, redis.TimeoutError)) \
                        or refuses_service(error):
                    raise StoreUnavailableError(f"Redis unavailable: {error}") from error
            return [safe_outcome(item.root, reply) for item, reply in zip(items, replies)]
        raise AssertionError("unreachable")

    @translate_errors
    def abort(self, job_id: str) -> Outcome:
        """A user abort of any job: acts like its failure (the whole tree stops)."""
        root = self.resolve_root(job_id)
        outcome = decode_outcome(root, self._scripts["abort"](self.keys, root, job=job_id))
        if outcome.verdict is Verdict.UNKNOWN:
            raise UnknownJobError(job_id)
        return outcome

    @translate_errors
    def reap(self, root: str, node: str, summary: str) -> list[str]:
        """Fail every RUNNING job of ``root`` on a lost ``node``; returns their ids."""
        return list(self._scripts["reap"](self.keys, root, node=node, summary=summary))
