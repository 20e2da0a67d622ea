"""The store's contract, listing, graft/retry and deletion suites on a real Redis
Cluster and a real Sentinel setup (the shared session ones, emptied per test), through
connect()'s URLs, and what
only a cluster shows: trees spread over the shards, index entries written before the
tree, EVALSHA pipelines that reload scripts, a health check that sees every shard.

The same tests run on one redis-server and on fakeredis in their own modules; here
only the ones whose Redis calls differ on a cluster or through Sentinel."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from redis.cluster import RedisCluster

from jobgrove import Client
from jobgrove.actors import upkeep as upkeep_module
from jobgrove.actors.upkeep import Upkeep
from jobgrove.core.spec import parse_spec
from jobgrove.errors import UnknownJobError
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging import submit as submit_steps
from jobgrove.messaging.connection import connect
from jobgrove.messaging.records import Finish
from jobgrove.messaging.store import Store
from jobgrove.messaging.topology import identity
from tests.conftest import flushed_url
from tests.servers import ClusterSetup
from tests.store_helpers import make_store, submit
from tests.test_retention import (  # noqa: F401
    store,
    test_a_deletion_cut_short_is_finished_by_the_next,
    test_delete_removes_every_key_and_index_entry,
    test_delete_removes_what_grafts_retries_and_reruns_added,
    test_prune_pages_through_many_trees,
)

# The contract, input and listing suites, collected again against this module's
# `backend` (defined below).
from tests.test_store_contract import (  # noqa: F401
    test_claim_never_returns_a_job_twice,
    test_claim_refused_once_tree_aborts,
    test_failed_job_result_not_stored,
    test_fenced_job_late_result_discarded,
    test_results_and_context_reach_the_parent,
    test_stale_finish_changes_nothing,
)
from tests.test_store_contract import test_random_operations_agree_with_model as agree
from tests.test_store_input import (  # noqa: F401
    test_any_job_id_resolves_its_tree,
    test_unknown_ids,
    test_unknown_node_writes_nothing,
)
from tests.test_store_listing import (  # noqa: F401
    test_list_by_tags_newest_first,
    test_list_limit_and_paging,
)
from tests.test_store_living import (  # noqa: F401
    test_a_job_lost_with_its_node_is_a_failed_attempt,
    test_a_retry_waits_out_its_delay,
    test_graft_refusals_name_the_reason_and_write_nothing,
)
from tests.test_store_living import (
    test_grafts_retries_and_reruns_agree_with_the_model as living_agree,
)
from tests.test_store_reaping import (  # noqa: F401
    test_a_claim_lost_in_a_failover_is_made_again_by_its_finish,
    test_node_hints_are_published,
    test_reap_fails_jobs_of_a_lost_node,
    test_reap_of_flagged_jobs_ends_them_aborted,
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture(params=["cluster", "sentinel"])
def backend(request: pytest.FixtureRequest) -> str:
    """This module's stand-in for conftest's ``backend``."""
    return flushed_url(request, request.param)


@pytest.fixture
def cluster_url(request: pytest.FixtureRequest) -> str:
    return flushed_url(request, "cluster")


def test_random_operations_agree_with_model(backend: str) -> None:
    agree(backend, 1)  # one seed here (three on one server and on fakeredis)


def test_grafts_retries_and_reruns_agree_with_the_model(backend: str) -> None:
    living_agree(backend, 1)


def tree(children: int = 2, node: str = "n1") -> dict[str, Any]:
    return {"kind": "noop", "node": node, "children": [{"kind": "noop"}] * children}


def test_trees_spread_over_the_shards(cluster_url: str, shared_cluster: ClusterSetup) -> None:
    shard_store = make_store(cluster_url)
    assert isinstance(shard_store.client, RedisCluster)
    roots = [submit(shard_store, tree(), {"workspace": "spread"})[0] for _ in range(12)]
    shards = {shared_cluster.primary_for(shard_store.keys.tree_key(r, "meta")).port for r in roots}
    assert len(shards) >= 2, "twelve trees all on one shard"
    for root in roots:
        # One tree's keys on one shard.
        tree_keys = list(shard_store.client.scan_iter(match=f"{shard_store.keys.tree(root)}:*"))
        assert len(tree_keys) >= 5
        assert {shared_cluster.primary_for(k).port for k in tree_keys} == {
            shared_cluster.primary_for(shard_store.keys.tree_key(root, "meta")).port}
    client = Client(cluster_url)
    page = client.list(workspace="spread", limit=5)
    assert [t["id"] for t in page.trees] == roots[::-1][:5]
    later = client.list(workspace="spread", limit=10, cursor=page.next_cursor)
    assert [t["id"] for t in later.trees] == roots[::-1][5:]
    # Every tree's jobs run through one batch of outcomes, across the shards.
    claims = [c for r in roots for c in shard_store.claim(r, "n1", 10)]
    assert len(claims) == 24
    shard_store.client.script_flush()  # as on a restarted or promoted primary: NOSCRIPT
    outcomes = shard_store.finish_many([Finish(c.root, c.id, c.token, True, reporter="n1",
                                         claim=True) for c in claims])
    assert [o.verdict for o in outcomes] == ["ok"] * 24
    parents = [o.claimed for o in outcomes if o.claimed is not None]
    assert sorted(p.id for p in parents) == sorted(roots)  # each claimed once, in the step


def test_a_submit_cut_short_leaves_entries_every_read_skips(
        cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between writing the index entries and writing the tree: the entries
    point at a tree that does not exist, and every read takes that in its stride."""
    shard_store = make_store(cluster_url)
    kept, _ = submit(shard_store, tree(1), {"workspace": "cut"})

    class Crash(Exception):
        pass

    def crash(*_args: Any) -> list[str]:
        raise Crash("the submitting process died here")

    monkeypatch.setattr(submit_steps, "_commit", crash)
    jobs, tags = parse_spec({**tree(1), "tags": {"workspace": "cut"}}, kind_infos())
    with pytest.raises(Crash):
        shard_store.submit(jobs, tags)
    monkeypatch.undo()
    lost = jobs[0].id
    assert shard_store.client.zscore(shard_store.keys.trees, lost) is not None  # dangling
    client = Client(cluster_url)
    assert [t["id"] for t in client.list(workspace="cut").trees] == [kept]
    assert [t["id"] for t in client.list(runs_on="n1").trees] == [kept]
    for job in jobs:
        with pytest.raises(UnknownJobError):
            client.status(job.id)
        with pytest.raises(UnknownJobError):
            client.status(job.id[:13])
    assert shard_store.tree_flags("n1") == {kept: (False, False), lost: None}
    assert shard_store.claim(lost, "n1", 10) == []
    # A node leaves it out of its work, and forgets it once it stayed missing.
    upkeep = SimpleNamespace(store=shard_store, _missing={})
    assert Upkeep.tree_flags(upkeep, "n1") == {kept: (False, False)}  # type: ignore[arg-type]
    assert lost in shard_store.node_trees("n1")
    monkeypatch.setattr(upkeep_module, "MISSING_TREE_GRACE", 0.0)
    assert Upkeep.tree_flags(upkeep, "n1") == {kept: (False, False)}  # type: ignore[arg-type]
    assert shard_store.node_trees("n1") == {kept}


def test_health_and_identity_see_every_shard(cluster_url: str,
                                             shared_cluster: ClusterSetup) -> None:
    shard_store = Store(connect(cluster_url))
    assert shard_store.ping() is True
    seen = identity(shard_store.client)
    assert seen is not None and len(seen) == 3
    assert {entry.split("=")[0] for entry in seen} == {
        f"127.0.0.1:{n.port}" for n in shared_cluster.primaries()}


def test_nodes_and_a_client_on_the_cluster(cluster_url: str, nodes: Any,
                                           tmp_path: Path) -> None:
    """In-process nodes and a client: trees on every shard, ids by prefix, nodes."""
    nodes("n1", cluster_url)
    nodes("n2", cluster_url)
    client = Client(cluster_url)
    assert {n["name"] for n in client.nodes() if n["alive"]} == {"n1", "n2"}
    roots = [client.submit({"kind": "noop", "node": "n1", "tags": {"application": "app"},
                            "children": [{"kind": "noop", "node": "n2"},
                                         {"kind": "noop"}]}) for _ in range(6)]
    for root in roots:
        assert client.wait(root[:10], timeout=20)["state"] == "SUCCESS"
    listed = client.list(application="app", state="SUCCESS")
    assert sorted(t["id"] for t in listed.trees) == sorted(roots)
    assert [(t["counts"]["total"], t["counts"]["SUCCESS"]) for t in listed.trees] == [(3, 3)] * 6
    failing = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "fail", "node": "n2"}, {"kind": "sleep", "params": {"seconds": 30}}]})
    assert client.wait(failing, timeout=20)["state"] == "ABORTED"
