"""A spec checked against the cluster it goes to: the kinds its nodes advertise and
the nodes that exist (used by submit and graft, in the client and in job code)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobgrove.core.spec import JobSpec, KindInfo, parse_graft
from jobgrove.errors import RefusedError, SpecError, UnknownNodeError
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store


def node_records(registry: Registry) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in registry.nodes()}


def cluster_kinds(records: dict[str, dict[str, Any]]) -> dict[str, KindInfo]:
    """What a spec is checked against: the kinds registered in this process, and the
    ones registered nodes advertise (their params cannot be checked here)."""
    advertised: set[str] = set()
    for record in records.values():
        advertised.update(_kinds(record) or ())
    return kind_infos(sorted(advertised))


def check_targets(jobs: Iterable[JobSpec], records: dict[str, dict[str, Any]],
                  allow_unknown_node: bool) -> None:
    """Each job's kind must be one its node advertises (when that node registered);
    jobs for a node that never registered need ``allow_unknown_node``."""
    jobs = list(jobs)
    _check_kinds_on_nodes(jobs, records)
    if not allow_unknown_node:
        unknown = {j.node for j in jobs} - set(records)
        if unknown:
            raise UnknownNodeError(sorted(unknown))


def graft(store: Store, registry: Registry, parent_id: str, spec: Any, *,
          allow_unknown_node: bool = False, within: str | None = None) -> list[str]:
    """Validate ``spec`` (a subtree or a list of them) exactly as a submit, limits counted
    on the whole tree, and add it under ``parent_id``. Returns the new subtree roots.
    ``within``: the tree ``parent_id`` must be in (job code grafts in its own tree)."""
    parent_id = store.resolve_id(parent_id)
    root, node, depth, size = store.graft_target(parent_id)
    if within is not None and root != within:
        raise RefusedError(f"cannot graft under {parent_id}: it is a job of tree {root}, "
                           f"not of this job's tree {within}")
    records = node_records(registry)
    jobs = parse_graft(spec, cluster_kinds(records), root=root, parent=parent_id,
                       parent_node=node, parent_depth=depth, tree_size=size)
    check_targets(jobs, records, allow_unknown_node)
    return store.graft(root, parent_id, jobs)


def _kinds(record: dict[str, Any]) -> set[str] | None:
    kinds = record.get("kinds")
    if not isinstance(kinds, list):
        return None
    return {k for k in kinds if isinstance(k, str)}


def _check_kinds_on_nodes(jobs: Iterable[JobSpec], records: dict[str, dict[str, Any]]
                          ) -> None:
    """A job's kind must be one its node advertises, when the node registered (a node
    that did not import the kind's module would fail the job at run time)."""
    for job in jobs:
        record = records.get(job.node)
        kinds = None if record is None else _kinds(record)
        if kinds is not None and job.kind not in kinds:
            raise SpecError(f"{job.path or job.id}.kind",
                            f"kind {job.kind!r} is not known to node {job.node} (it runs: "
                            f"{', '.join(sorted(kinds)) or 'none'}; start it with "
                            "--import MODULE for the module that registers the kind)")
