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

from jobgrove.core.spec import JobSpec
from jobgrove.core.status import nest_status
from jobgrove.errors import (
    CorruptRecordError,
    StoreUnavailableError,
    UnknownJobError,
)
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.records import Claim, Finish, Outcome, decode_map, load_json, to_float
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

    # -- scripts ---------------------------------------------------------------
    def _run(self, name: str, root: str, *args: Any) -> Any:
        argv = [self.keys.tree(root), self.keys.channel_prefix, "", root, *args]
        return self._scripts[name](keys=[self.keys.tree_key(root, "meta")], args=argv)

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
        hset_chunks(tk("state"), ((j.id, "NEW" if j.children else "WAITING") for j in jobs))
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
                pipe.rpush(tk(f"ready:{node}"), *ids[start:start + _CHUNK])
        nodes = sorted({j.node for j in jobs})
        pipe.sadd(tk("nodes"), *nodes)
        pipe.hset(tk("meta"), mapping={
            "root": root, "title": jobs[0].title, "created": repr(now),
            "tags": json.dumps(tags), "size": len(jobs)})
        pipe.zadd(k.trees, {root: now})
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
    @translate_errors
    def resolve_root(self, job_id: str) -> str:
        root = self.client.hget(self.keys.roots, job_id) if isinstance(job_id, str) else None
        if root is None:
            raise UnknownJobError(job_id)
        return root

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
        root = self.resolve_root(job_id)
        state = self.client.hget(self.keys.tree_key(root, "state"), job_id)
        if state is None:
            raise UnknownJobError(job_id)
        return state

    @translate_errors
    def job_status(self, job_id: str) -> dict[str, Any]:
        """One job's status object, without children."""
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
        if state != "RUNNING" or token is None or raw_spec is None:
            return None
        spec = load_json(raw_spec, f"job {job_id} spec")
        return Claim(root, job_id, token, spec, self.results(root, spec.get("children", [])),
                     self.context(root))

    @translate_errors
    def node_trees(self, node: str) -> set[str]:
        return set(self.client.smembers(self.keys.node_trees(node)))

    @translate_errors
    def forget_node_tree(self, node: str, root: str) -> None:
        self.client.srem(self.keys.node_trees(node), root)

    # -- state changes (one Lua script each) --------------------------------------------
    @translate_errors
    def claim(self, root: str, node: str, max_jobs: int) -> list[Claim]:
        """Move up to ``max_jobs`` runnable jobs of ``root`` on ``node`` to RUNNING."""
        if max_jobs <= 0:
            return []
        flat = self._run("claim", root, node, max_jobs, self._token_base())
        if not flat:
            return []
        context = decode_map(flat[0], "tree context")
        return [Claim(root, flat[i], flat[i + 1], load_json(flat[i + 2], f"job {flat[i]} spec"),
                      decode_map(flat[i + 3], f"children results of {flat[i]}"), context)
                for i in range(1, len(flat), 4)]

    def _finish_args(self, item: Finish) -> tuple[list[str], list[Any]]:
        encoded = "" if item.result is None else json.dumps(item.result)
        argv = [self.keys.tree(item.root), self.keys.channel_prefix, "",
                item.root, item.job_id, item.token, "SUCCESS" if item.ok else "FAILED",
                item.summary[:2000], encoded, item.reporter,
                self._token_base() if item.claim else ""]
        return [self.keys.tree_key(item.root, "meta")], argv

    @staticmethod
    def _outcome(root: str, reply: list[Any]) -> Outcome:
        ready_on = (reply[2] or None) if len(reply) > 2 else None
        claimed = None
        if len(reply) > 3:
            context = decode_map(reply[3], "tree context")
            job_id, token, spec, results = reply[4:8]
            claimed = Claim(root, job_id, token, load_json(spec, f"job {job_id} spec"),
                            decode_map(results, f"children results of {job_id}"), context)
        return Outcome(reply[0], reply[1], ready_on, claimed)

    def _safe_outcome(self, root: str, reply: Any) -> Outcome:
        if isinstance(reply, Exception):
            return Outcome("error", str(reply))
        try:
            return self._outcome(root, reply)
        except (CorruptRecordError, IndexError, TypeError, ValueError) as exc:
            return Outcome("error", f"unreadable reply {reply!r:.200}: {exc}")

    @translate_errors
    def finish(self, root: str, job_id: str, token: str, ok: bool,
               summary: str = "", result: Any = None) -> Outcome:
        """Record a RUNNING job's outcome (compare-and-set on its run token)."""
        keys, argv = self._finish_args(Finish(root, job_id, token, ok, summary, result))
        return self._outcome(root, self._scripts["finish"](keys=keys, args=argv))

    @translate_errors
    def finish_many(self, items: list[Finish]) -> list[Outcome]:
        """``finish`` for many jobs in one round trip (each still its own atomic script)."""
        script = self._scripts["finish"]
        for attempt in (1, 2):
            # EVALSHA directly: redis-py's script-in-pipeline costs a SCRIPT EXISTS
            # round trip per batch; a NOSCRIPT (server restarted) reloads and retries.
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                keys, argv = self._finish_args(item)
                pipe.evalsha(script.sha, len(keys), *keys, *argv)
            # Each reply on its own: one failing script must not cost the others.
            replies = pipe.execute(raise_on_error=False)
            errors = [r for r in replies if isinstance(r, Exception)]
            if any(isinstance(e, redis.exceptions.NoScriptError) for e in errors) \
                    and attempt == 1:
                self.client.script_load(script.script)
                continue  # replaying is safe: a second finish of a job is "stale"
            for error in errors:
                if isinstance(error, (redis.ConnectionError, redis.TimeoutError)) \
                        or refuses_service(error):
                    raise StoreUnavailableError(f"Redis unavailable: {error}") from error
            return [self._safe_outcome(item.root, reply) for item, reply in zip(items, replies)]
        raise AssertionError("unreachable")

    @translate_errors
    def abort(self, job_id: str) -> Outcome:
        """A user abort of any job: acts like its failure (the whole tree stops)."""
        root = self.resolve_root(job_id)
        verdict, state = self._run("abort", root, job_id)
        if verdict == "unknown":
            raise UnknownJobError(job_id)
        return Outcome(verdict, state)

    @translate_errors
    def reap(self, root: str, node: str, summary: str) -> list[str]:
        """Fail every RUNNING job of ``root`` on a lost ``node``; returns their ids."""
        return list(self._run("reap", root, node, summary))
