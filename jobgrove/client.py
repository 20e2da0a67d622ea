"""The public client: submit trees, read their status, wait, abort, list."""

from __future__ import annotations

import builtins
import time
from typing import Any

from jobgrove.core.spec import JobSpec, KindInfo, parse_graft, parse_spec
from jobgrove.core.states import State
from jobgrove.errors import UnknownJobError, UnknownNodeError, WaitTimeoutError
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.listing import Page, list_trees
from jobgrove.messaging.records import Outcome
from jobgrove.messaging.redis_errors import translate_errors
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store


def cluster_kinds(registry: Registry) -> dict[str, KindInfo]:
    """What a spec is checked against: the kinds registered in this process, and the
    ones registered nodes advertise (their params cannot be checked here)."""
    advertised: set[str] = set()
    for record in registry.nodes():
        kinds = record.get("kinds")
        if isinstance(kinds, list):
            advertised.update(k for k in kinds if isinstance(k, str))
    return kind_infos(sorted(advertised))


def check_nodes(registry: Registry, jobs: builtins.list[JobSpec]) -> None:
    """UnknownNodeError for jobs assigned to a node that never registered."""
    names = sorted({j.node for j in jobs})
    unknown = set(names) - registry.known(names)
    if unknown:
        raise UnknownNodeError(sorted(unknown))


def graft(store: Store, registry: Registry, parent_id: str, spec: Any, *,
          allow_unknown_node: bool = False) -> builtins.list[str]:
    """Validate ``spec`` (a subtree or a list of them) exactly as a submit, limits counted
    on the whole tree, and add it under ``parent_id``. Returns the new subtree roots."""
    root, node, depth, size = store.graft_target(parent_id)
    jobs = parse_graft(spec, cluster_kinds(registry), root=root, parent=parent_id,
                       parent_node=node, parent_depth=depth, tree_size=size)
    if not allow_unknown_node:
        check_nodes(registry, jobs)
    return store.graft(root, parent_id, jobs)


class Client:
    """Talks to a cluster through its Redis. ``redis``: a URL, a redis-py client, or None
    (``--redis``/``$JOBGROVE_REDIS_URL``/local default)."""

    def __init__(self, redis: Any = None, *, namespace: str = "jg") -> None:
        client = connect(redis) if redis is None or isinstance(redis, str) else decoded(redis)
        self.keys = Keys(namespace)
        self.store = Store(client, self.keys)
        self.registry = Registry(client, self.keys)

    def submit(self, spec: Any, *, node: str | None = None,
               allow_unknown_node: bool = False) -> str:
        """Validate and store a tree; returns its id (the root's id).

        Kinds are checked against the ones registered in this process and the ones
        registered nodes advertise. Jobs for a node that never registered are refused
        unless ``allow_unknown_node``; a registered node that is down just gets them later.
        """
        jobs, tags = parse_spec(spec, cluster_kinds(self.registry), default_node=node)
        if not allow_unknown_node:
            check_nodes(self.registry, jobs)
        return self.store.submit(jobs, tags)

    def graft(self, parent_id: str, spec: Any, *,
              allow_unknown_node: bool = False) -> builtins.list[str]:
        """Add one subtree (a spec object) or several (a list) under ``parent_id``, a job
        that has not started; it waits for them too. Validated like a submit (SpecError);
        RefusedError, with nothing written, if the job has started or finished or the
        tree is aborting. Returns the ids of the new subtree roots."""
        return graft(self.store, self.registry, parent_id, spec,
                     allow_unknown_node=allow_unknown_node)

    def rerun(self, job_id: str) -> str:
        """Run again what did not succeed in the done tree of ``job_id``: FAILED and
        ABORTED jobs go back to NEW/WAITING, SUCCESS jobs keep their results and do not
        run again. RefusedError while a job runs or if the tree succeeded. Returns the
        tree id; the tree's ``run`` grows by one."""
        root, _ = self.store.rerun(job_id)
        return root

    def context(self, tree_id: str) -> dict[str, Any]:
        """The tree-wide context its jobs wrote (``ctx.context``)."""
        return self.store.context(self.store.resolve_root(tree_id))

    def status(self, job_id: str) -> dict[str, Any]:
        """The whole tree containing ``job_id``, nested, with every job's state."""
        return self.store.tree_status(job_id)

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's status object (no children)."""
        return self.store.job_status(job_id)

    def abort(self, job_id: str) -> Outcome:
        """Abort the tree of ``job_id``, as if that job had failed."""
        return self.store.abort(job_id)

    def list(self, *, workspace: str | None = None, application: str | None = None,
             version: str | None = None, instance: str | None = None,
             node: str | None = None, limit: int = 50, cursor: str | None = None) -> Page:
        """Trees matching every given tag, newest first."""
        tags = {"workspace": workspace, "application": application, "version": version,
                "instance": instance, "node": node}
        return list_trees(self.store, {k: v for k, v in tags.items() if v is not None},
                          limit=limit, cursor=cursor)

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Every node that ever registered: ``alive``, ``address``, ``running`` (ids of
        its RUNNING jobs: the heartbeat's list, less the jobs that finished since)."""
        nodes = self.registry.nodes()
        for node in nodes:
            node["running"] = [j for j in node.get("running", []) if self._is_running(j)]
        return nodes

    def _is_running(self, job_id: Any) -> bool:
        try:
            return isinstance(job_id, str) and self.store.job_state(job_id) == State.RUNNING
        except UnknownJobError:
            return False

    @translate_errors
    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the tree is done (root finished, nothing running); its status."""
        root = self.store.resolve_root(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.store.done_hints(root) as hints:
            check_at = 0.0
            while True:
                now = time.monotonic()
                # Re-read on the "done" hint, and at least every half second: hints
                # may be lost.
                if now >= check_at:
                    if self.store.tree_finished(root):
                        break
                    check_at = now + 0.5
                if deadline is not None and now >= deadline:
                    raise WaitTimeoutError(f"tree {root} not finished after {timeout}s")
                wait = check_at - now if deadline is None else min(check_at, deadline) - now
                if hints.wait(wait):
                    check_at = 0.0
        return self.status(root)
