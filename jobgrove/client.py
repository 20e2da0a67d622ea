"""The public client: submit trees, read their status, wait, abort, list; delete and
prune trees, forget nodes."""

from __future__ import annotations

import builtins
import json
import os
import time
from pathlib import Path
from typing import Any

from jobgrove.core.durations import parse_duration
from jobgrove.core.spec import parse_spec
from jobgrove.core.states import State
from jobgrove.core.status import Status, waiting_notes, walk
from jobgrove.errors import (
    JobgroveError,
    UnknownJobError,
    WaitTimeoutError,
)
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.keys import Keys
from jobgrove.messaging.listing import Page, list_trees
from jobgrove.messaging.logtails import StoredLog, read_stored
from jobgrove.messaging.records import Outcome
from jobgrove.messaging.redis_errors import translate_errors
from jobgrove.messaging.registry import Registry, node_state
from jobgrove.messaging.retention import PruneResult, Retention
from jobgrove.messaging.store import Store
from jobgrove.targets import check_targets, cluster_kinds, graft, node_records


class Client:
    """Talks to a cluster through its Redis. ``redis``: a URL, a redis-py client, or None
    (``--redis``/``$JOBGROVE_REDIS_URL``/local default).

    Every method that takes a job id also takes any unique prefix of one (at least 8
    characters); an ambiguous prefix raises ``AmbiguousIdError`` naming the candidates.
    """

    def __init__(self, redis: Any = None, *, namespace: str = "jg") -> None:
        client = connect(redis) if redis is None or isinstance(redis, str) else decoded(redis)
        self.keys = Keys(namespace)
        self.store = Store(client, self.keys)
        self.registry = Registry(client, self.keys)

    def submit(self, spec: Any, *, node: str | None = None,
               allow_unknown_node: bool = False) -> str:
        """Validate and store a tree; returns its id (the root's id).

        Kinds are checked against the ones registered in this process and the ones
        registered nodes advertise, and each job's kind must be one its own node
        advertises (when that node ever registered: its last registration counts).
        Jobs for a node that never registered are refused unless
        ``allow_unknown_node``; a registered node that is down just gets them later.
        """
        records = node_records(self.registry)
        jobs, tags = parse_spec(spec, cluster_kinds(records), default_node=node)
        check_targets(jobs, records, allow_unknown_node)
        return self.store.submit(jobs, tags)

    def resolve(self, job_id: str) -> str:
        """The full id for ``job_id``: a job id, or a unique prefix of at least 8
        characters (``AmbiguousIdError`` lists the candidates otherwise)."""
        return self.store.resolve_id(job_id)

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
        root, _ = self.store.rerun(self.resolve(job_id))
        return root

    def context(self, tree_id: str) -> dict[str, Any]:
        """The tree-wide context its jobs wrote (``ctx.context``)."""
        return self.store.context(self.store.resolve_root(self.resolve(tree_id)))

    def status(self, job_id: str) -> dict[str, Any]:
        """The whole tree containing ``job_id`` (or an id prefix), nested, with every
        job's state."""
        return self.store.tree_status(self.resolve(job_id))

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's status object (no children)."""
        return self.store.job_status(self.resolve(job_id))

    def abort(self, job_id: str) -> Outcome:
        """Abort the tree of ``job_id``, as if that job had failed."""
        return self.store.abort(self.resolve(job_id))

    def list(self, *, workspace: str | None = None, application: str | None = None,
             version: str | None = None, instance: str | None = None,
             node: str | None = None, runs_on: str | None = None, state: str | None = None,
             limit: int = 50, cursor: str | None = None) -> Page:
        """Trees matching every given filter, newest first: tags (``node`` is the
        root's tag), ``runs_on`` (any job assigned to that node) and ``state`` (the
        tree's state derived from all its jobs). Each item is the root's status plus
        ``tree_state``, ``counts``, ``duration`` and ``waiting_for``."""
        tags = {"workspace": workspace, "application": application, "version": version,
                "instance": instance, "node": node}
        return list_trees(self.store, {k: v for k, v in tags.items() if v is not None},
                          limit=limit, cursor=cursor, runs_on=runs_on,
                          state=None if state is None else str(state),
                          node_states=self.node_states())

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Every node that registered (and was not forgotten): ``alive``, ``state``
        (``up``, ``stopped`` or ``lost``), ``address``, ``running`` (ids of its RUNNING
        jobs: the heartbeat's list, less the jobs that finished since); never a secret."""
        nodes = self.registry.nodes()
        for node in nodes:
            node["running"] = [j for j in node.get("running", []) if self._is_running(j)]
        return nodes

    def node_states(self) -> dict[str, str]:
        """Registered node name -> ``up``, ``stopped`` or ``lost``."""
        return {n["name"]: node_state(n) for n in self.registry.nodes()}

    def waiting_notes(self, status: Status) -> dict[str, str]:
        """Job id -> ``waiting for node X (not registered|stopped|lost)`` for the
        ``WAITING`` jobs of a status whose node is not up."""
        return waiting_notes(walk(status), self.node_states())

    def _is_running(self, job_id: Any) -> bool:
        try:
            return isinstance(job_id, str) and self.store.job_state(job_id) == State.RUNNING
        except UnknownJobError:
            return False

    # -- removing trees and nodes ----------------------------------------------------------
    def delete(self, job_id: str) -> str:
        """Delete the done tree of ``job_id`` (any job of it): its keys, its index
        entries, and (as its nodes learn of it) its log files. Returns the tree id.
        Raises UnknownJobError, or TreeBusyError while a job of it runs or it is not done."""
        return Retention(self.store).delete(job_id)

    def prune(self, older_than: float | str, *, dry_run: bool = False,
              archive_dir: str | os.PathLike[str] | None = None) -> PruneResult:
        """Delete the done trees whose root finished more than ``older_than`` ago
        (seconds, or a text such as ``"7d"``). ``archive_dir``: write each one's full
        status to ``<archive_dir>/<tree id>.json`` first. ``dry_run``: only list them."""
        seconds = _seconds(older_than)
        archive = None
        if archive_dir is not None and not dry_run:
            folder = Path(archive_dir)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JobgroveError(f"archive dir {folder}: {exc.strerror or exc}") from exc

            def archive(root: str) -> None:
                write_archive(folder, root, self.store.tree_status(root))

        return Retention(self.store).prune(seconds, dry_run=dry_run, archive=archive)

    def forget_node(self, name: str) -> None:
        """Remove a stopped or lost node that runs nothing and has nothing left to run
        (NodeBusyError otherwise)."""
        Retention(self.store).forget_node(self.registry, name)

    def stored_log(self, job_id: str) -> StoredLog | None:
        """The end of the job's log its node stored in Redis when the job ended (None:
        nothing stored: the job has not ended, never ran, or its node was lost)."""
        job_id = self.resolve(job_id)
        return read_stored(self.store, self.store.resolve_root(job_id), job_id)

    @translate_errors
    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the tree is done (root finished, nothing running); its status."""
        root = self.store.resolve_root(self.resolve(job_id))
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


def _seconds(older_than: float | str) -> float:
    if isinstance(older_than, str):
        try:
            return parse_duration(older_than)
        except ValueError as exc:
            raise JobgroveError(str(exc)) from None
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) \
            or not 0 <= older_than < float("inf"):
        raise JobgroveError(f"older_than must be a number of seconds >= 0, got {older_than!r}")
    return float(older_than)


def write_archive(folder: Path, root: str, status: dict[str, Any]) -> None:
    """``<folder>/<root>.json``, written whole or not at all (a temporary file renamed)."""
    path = folder / f"{root}.json"
    part = folder / f".{root}.json.part"
    try:
        part.write_text(json.dumps(status, indent=1) + "\n", encoding="utf-8")
        os.replace(part, path)
    except OSError as exc:
        raise JobgroveError(f"cannot write the archive {path}: {exc.strerror or exc}; "
                            "nothing more was deleted") from exc
