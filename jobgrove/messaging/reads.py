"""Reading trees and jobs from Redis: status objects in the contract's shape, the
connections (pub/sub, hints), and what nodes re-read when they reconcile."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from typing import Any

from jobgrove.core.ids import is_job_id
from jobgrove.core.status import nest_status
from jobgrove.errors import CorruptRecordError, UnknownJobError
from jobgrove.messaging import topology
from jobgrove.messaging.batch import Batches
from jobgrove.messaging.ids import resolve_id
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.pubsub import Hints
from jobgrove.messaging.records import Holder, load_json, to_float
from jobgrove.messaging.redis_errors import translate_errors
from jobgrove.messaging.scripts import register_scripts

#: The per-job hashes a status object is made of.
_PER_JOB = ("state", "node", "parent", "spec", "started", "finished", "summary", "cause",
            "attempt", "results", "progress")


_META = ("created", "tags", "run")


def _json_or_none(raw: str | None, what: str) -> Any:
    if raw is None:
        return None
    try:
        return load_json(raw, what)
    except CorruptRecordError:
        return None


def _status(job_id: str, root: str, fields: dict[str, str | None],
            meta: dict[str, str | None]) -> dict[str, Any]:
    """One job's status object (the contract's shape, ``child_ids`` for children) from
    its per-job fields (``_PER_JOB``) and the tree's meta fields. A spec that cannot be
    read shows as such (``child_ids`` None: the caller finds the children another way);
    the rest of the tree stays readable."""
    try:
        job_spec = load_json(fields["spec"] or "", f"job {job_id} spec")
        if not isinstance(job_spec, dict):
            raise CorruptRecordError(f"job {job_id} spec: not an object")
    except CorruptRecordError:
        job_spec = {"title": "(unreadable record)", "children": None}
    status = {"id": job_id, "root": root, "parent": fields["parent"], "node": fields["node"],
              "kind": job_spec.get("kind"), "title": job_spec.get("title"),
              "state": fields["state"], "summary": fields["summary"],
              "cause": fields["cause"], "created": to_float(meta.get("created")),
              "started": to_float(fields["started"]),
              "finished": to_float(fields["finished"]),
              "tags": {}, "attempt": int(fields["attempt"] or 1),
              "result": _json_or_none(fields["results"], f"result of {job_id}"),
              "progress": _json_or_none(fields["progress"], f"progress of {job_id}"),
              "child_ids": job_spec.get("children", [])}
    if job_id == root:
        status["tags"] = _json_or_none(meta.get("tags"), "tags") or {}
        status["run"] = int(meta.get("run") or 1)
    return status


#: For readers outside this module that build the same status objects (``listing``).
status_record, JOB_FIELDS, META_FIELDS = _status, _PER_JOB, _META


class StoreReads:
    """The reading half of ``Store``: connections, and trees and jobs as status objects."""

    def __init__(self, client: Any, keys: Keys | None = None, *, min_replicas_ack: int = 0,
                 ack_timeout: float = 1.0) -> None:
        # A redis-py client (or fakeredis) with decode_responses=True: typed Any, since
        # redis-py's annotations cannot express "decoded" (every reply is bytes | str).
        self.client: Any = client
        self.keys = keys or Keys()
        self._scripts = register_scripts(client)
        #: Claims and finishes (``min_replicas_ack``: acknowledged by that many replicas).
        self.batches = Batches(client, min_replicas_ack, ack_timeout)
        # Run tokens only need to be unique: a random prefix per store and a counter are
        # cheaper than a uuid4 per claim.
        self._token_prefix = uuid.uuid4().hex[:16]
        self._token_count = itertools.count()
        #: Who claims and reports when no holder is given: tools and tests that use a
        #: store directly (a node passes its own ``Holder``).
        self.holder = Holder("", f"store-{self._token_prefix}", 0)

    def _token_base(self) -> str:
        return f"{self._token_prefix}{next(self._token_count):x}"

    # -- connections -------------------------------------------------------------
    def pubsub(self, **kwargs: Any) -> Any:
        """A new pub/sub connection (for ``pubsub.Listener``)."""
        return topology.pubsub(self.client, **kwargs)

    def tree_hints(self, root: str) -> Hints:
        """A subscription to every change of one tree (hints to re-read it)."""
        return Hints(self, [self.keys.tree_channel(root)])

    def done_hints(self, root: str) -> Hints:
        """A subscription to the tree's ``done`` message only."""
        return Hints(self, [self.keys.done_channel(root)])

    @translate_errors
    def ping(self) -> bool:
        """Redis serves every key now (on a cluster: every shard)."""
        return topology.ping(self.client)

    @translate_errors
    def identity(self) -> frozenset[str] | None:
        """Who serves writes now (``topology.identity``): it changes with a failover."""
        return topology.identity(self.client)

    @translate_errors
    def reset_connections(self) -> None:
        """Drop pooled connections (after an outage: the next ones find the primary)."""
        topology.reset_connections(self.client)

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
        pipe.hgetall(self.keys.tree_key(root, "grafted"))
        *hashes, meta, grafted = pipe.execute()
        parts = dict(zip(_PER_JOB, hashes))
        if not parts["state"]:
            raise UnknownJobError(root)
        flat = {job_id: _status(job_id, root, {p: parts[p].get(job_id) for p in _PER_JOB},
                                meta)
                for job_id in parts["state"]}
        parent = parts["parent"]
        for job_id, job in flat.items():
            if job["child_ids"] is None:  # its spec is unreadable: its children say
                job["child_ids"] = sorted(i for i, p in parent.items() if p == job_id)
            elif job_id in grafted:
                more = _json_or_none(grafted[job_id], f"grafted children of {job_id}")
                job["child_ids"] = [*job["child_ids"], *(more or [])]
        return flat

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
        pipe.hmget(self.keys.tree_key(root, "meta"), _META)
        *values, meta = pipe.execute()
        if values[0] is None:
            raise UnknownJobError(job_id)
        record = _status(job_id, root, dict(zip(_PER_JOB, values)), dict(zip(_META, meta)))
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
    def job_spec(self, root: str, job_id: str) -> dict[str, Any]:
        """What a job was submitted as: kind, title, params, children ids."""
        raw = self.client.hget(self.keys.tree_key(root, "spec"), job_id)
        if raw is None:
            raise UnknownJobError(job_id)
        spec: dict[str, Any] = load_json(raw, f"job {job_id} spec")
        return spec

    @translate_errors
    def node_trees(self, node: str) -> set[str]:
        return set(self.client.smembers(self.keys.node_trees(node)))

    @translate_errors
    def tree_flags(self, node: str) -> dict[str, tuple[bool, bool] | None]:
        """For each tree with jobs on ``node``: (finished, aborting), or None if the
        tree does not exist (an index entry whose tree was never written, or deleted)."""
        roots = sorted(self.node_trees(node))
        if not roots:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for root in roots:
            pipe.hmget(self.keys.tree_key(root, "meta"), ["finished", "abort_cause", "root"])
        flags = pipe.execute()
        return {root: None if stored is None else (finished is not None, abort is not None)
                for root, (finished, abort, stored) in zip(roots, flags)}

    @translate_errors
    def running_on(self, root: str, node: str) -> dict[str, str | None]:
        """RUNNING jobs of ``root`` on ``node``: id -> abort cause (None if not asked)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.tree_key(root, "running"))
        pipe.hgetall(self.keys.tree_key(root, "abort"))
        running, aborts = pipe.execute()
        return {i: aborts.get(i) for i, n in running.items() if n == node}

    @translate_errors
    def claimed_on(self, root: str, node: str) -> dict[str, str]:
        """RUNNING jobs of ``root`` on ``node``: id -> the process instance that claimed
        it ('' if unknown)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.tree_key(root, "running"))
        pipe.hgetall(self.keys.tree_key(root, "owner"))
        running, owners = pipe.execute()
        return {i: owners.get(i, "") for i, n in running.items() if n == node}
