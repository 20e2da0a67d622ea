"""Exploratory probe for issue 11: what of jobgrove breaks on Redis Cluster and on
Sentinel, through connect()'s redis+cluster:// and redis+sentinel:// URLs.

Skipped unless JOBGROVE_SCALE_PROBE=1. Failures here are findings, not regressions:
they are listed, with their causes, in docs/scaling-notes.md. Run with

    JOBGROVE_SCALE_PROBE=1 .venv/bin/python -m pytest -q tests/test_scale_probe.py

Backends: ``sentinel`` and ``cluster`` as jobgrove is today, and ``cluster-split``: the
cluster with two stand-ins for the coming single-slot rework (a cross-slot MULTI split
into one MULTI per slot plus plain PUBLISHes; EVALSHA allowed in cluster pipelines), to
see what breaks behind the first failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterPipeline, RedisCluster

from jobgrove import Client, StoreUnavailableError, WaitTimeoutError
from jobgrove.messaging.connection import connect
from tests.helpers import wait_for
from tests.runtime_helpers import REC, rec  # noqa: F401  (rec: no job runs twice)
from tests.servers import HOST, ClusterSetup, SentinelSetup, env_flag

# The store's contract suite, collected again here against this module's `backend`.
from tests.test_store_contract import (  # noqa: F401
    test_claim_never_returns_a_job_twice,
    test_claim_refused_once_tree_aborts,
    test_fenced_job_late_result_discarded,
    test_node_hints_are_published,
    test_random_operations_agree_with_model,
    test_reap_fails_jobs_of_a_lost_node,
    test_reap_of_flagged_jobs_ends_them_aborted,
    test_results_and_context_reach_the_parent,
    test_stale_finish_changes_nothing,
)
from tests.test_store_input import (  # noqa: F401
    test_any_job_id_resolves_its_tree,
    test_invalid_spec_writes_nothing,
    test_unknown_ids,
    test_unknown_node_writes_nothing,
)
from tests.test_store_listing import (  # noqa: F401
    test_list_by_tags_newest_first,
    test_list_limit_and_paging,
    test_paging_through_equal_timestamps,
)

pytestmark = [
    pytest.mark.skipif(not env_flag("JOBGROVE_SCALE_PROBE"),
                       reason="exploratory; set JOBGROVE_SCALE_PROBE=1"),
    pytest.mark.redis, pytest.mark.timeout(120)]
BACKENDS = ["sentinel", "cluster", "cluster-split"]


# -- stand-ins for the single-slot rework (cluster-split) --------------------------------
_ORIGINAL_PIPELINE = RedisCluster.pipeline


class SplitTransaction:
    """Takes the place of a cross-slot MULTI on a cluster: one MULTI per hash slot, then
    the PUBLISHes, with no ordering or repair between them (what 'separate single-slot
    steps' will do, minus the care)."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        by_slot: dict[int, list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = {}
        publishes = []
        for name, args, kwargs in self.calls:
            if name == "publish":
                publishes.append(args)
            else:
                by_slot.setdefault(self.client.keyslot(args[0]), []).append(
                    (name, args, kwargs))
        for calls in by_slot.values():
            pipe = _ORIGINAL_PIPELINE(self.client, transaction=True)
            for name, args, kwargs in calls:
                getattr(pipe, name)(*args, **kwargs)
            pipe.execute()
        for args in publishes:
            self.client.publish(*args)
        return []


def _pipeline(self: RedisCluster, transaction: bool | None = None,
              shard_hint: Any = None) -> Any:
    if transaction:
        return SplitTransaction(self)
    return _ORIGINAL_PIPELINE(self, transaction=transaction, shard_hint=shard_hint)


def _evalsha(self: ClusterPipeline, *args: Any) -> Any:
    # redis-py blocks pipe.evalsha() on clusters; the generic path routes it by key.
    return self.execute_command("EVALSHA", *args)


@pytest.fixture
def split_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RedisCluster, "pipeline", _pipeline)


@pytest.fixture
def split_workarounds(split_submit: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ClusterPipeline, "evalsha", _evalsha)


# -- backends ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_sentinel() -> Iterator[SentinelSetup]:
    with SentinelSetup() as setup:
        yield setup


@pytest.fixture(scope="module")
def probe_cluster() -> Iterator[ClusterSetup]:
    with ClusterSetup() as setup:
        yield setup


def _url_of(setup: SentinelSetup | ClusterSetup) -> str:
    connect(setup.url).flushall()
    return setup.url


def _url(request: pytest.FixtureRequest, kind: str) -> str:
    if kind == "cluster-split":
        request.getfixturevalue("split_workarounds")
    return _url_of(request.getfixturevalue(
        "probe_sentinel" if kind == "sentinel" else "probe_cluster"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """This module's stand-in for conftest's ``backend``: the contract suite imported
    above runs on each setup, through connect()."""
    return _url(request, request.param)


# -- a node and a client -------------------------------------------------------------------
def step(title: str, node: str, *children: dict[str, Any], gate: str | None = None
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "jgt-step", "title": title, "node": node,
                            "params": {"gate": gate} if gate else {}}
    if children:
        spec["children"] = list(children)
    return spec


@pytest.mark.parametrize("kind", BACKENDS)
def test_nodes_and_client_round_trip(kind: str, request: pytest.FixtureRequest,
                                     nodes: Any) -> None:
    url = _url(request, kind)
    nodes("n1", url)
    nodes("n2", url)
    client = Client(url)
    assert {n["name"] for n in client.nodes() if n["alive"]} == {"n1", "n2"}
    spec = step("root", "n1", step("a", "n2", step("a1", "n1")), step("b", "n2"))
    root = client.submit({**spec, "tags": {"workspace": "probe"}})
    status = client.wait(root, timeout=20)
    assert status["state"] == "SUCCESS"
    assert [t["id"] for t in client.list(workspace="probe").trees] == [root]
    failing = client.submit(step("r", "n1", {"kind": "fail", "node": "n2"},
                                 step("held", "n1", gate="held")))
    assert client.wait(failing, timeout=20)["state"] == "ABORTED"


def test_outcomes_without_evalsha_in_cluster_pipelines(
        probe_cluster: ClusterSetup, split_submit: None, nodes: Any) -> None:
    """With submit split but Store.finish_many unchanged: redis-py refuses
    pipe.evalsha() on a cluster with a RedisClusterException (not a RedisError), which
    passes translate_errors and costs the node actor its whole outbox batch."""
    url = _url_of(probe_cluster)
    nodes("n1", url)
    client = Client(url)
    root = client.submit(step("root", "n1"))
    wait_for(lambda: root in REC.ended, timeout=10, what="the job to run")
    with pytest.raises(WaitTimeoutError):
        client.wait(root, timeout=3)
    assert client.job(root)["state"] == "RUNNING"  # its outcome was dropped


def _finished(client: Client, root: str) -> dict[str, Any] | None:
    try:
        return client.status(root) if client.store.tree_finished(root) else None
    except StoreUnavailableError:
        return None


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_tree_across_a_sentinel_failover(how: str, sentinel_setup: SentinelSetup,
                                           nodes: Any) -> None:
    """Kill -9 (or SIGSTOP, then SIGCONT once the replica is promoted) the primary while
    jobs run: what jobgrove does today, with no failover handling of its own. The rec
    fixture fails the test if a job's code ran twice."""
    setup = sentinel_setup
    nodes("n1", setup.url, lease=2.0)
    nodes("n2", setup.url, lease=2.0)
    client = Client(setup.url)
    root = client.submit(step("root", "n1", step("held1", "n1", gate="g"),
                              step("held2", "n2", gate="g"), step("quick", "n2")))
    wait_for(lambda: len(REC.now_running("n1")) + len(REC.now_running("n2")) == 2,
             timeout=10, what="the held jobs")
    setup.wait_replicated()
    stopped_at = time.monotonic()
    setup.primary.kill() if how == "kill" else setup.primary.pause()
    setup.wait_for_failover(setup.primary, timeout=15)
    promoted = time.monotonic() - stopped_at
    if how == "pause":
        setup.primary.resume()  # comes back as a primary until the sentinels demote it
        wait_for(lambda: setup.primary.info("replication").get("role") == "slave",
                 timeout=15, what="the old primary demoted")
    REC.open("g")
    status = wait_for(lambda: _finished(client, root), timeout=30,
                      what="the tree to finish after the failover")
    print(f"\nsentinel failover ({how}): replica promoted after {promoted:.1f}s, tree "
          f"{status['state']} {time.monotonic() - stopped_at:.1f}s after the {how}; "
          f"states {sorted(j['state'] for j in [status, *status['children']])}")
    assert status["state"] == "SUCCESS"


def test_scripts_after_a_sentinel_failover(sentinel_setup: SentinelSetup) -> None:
    """Redis 7 replicates scripts as effects, not the script cache: after a failover
    the new primary answers EVALSHA with NOSCRIPT until the script is loaded again."""
    client = connect(sentinel_setup.url)
    sha = client.script_load("return 1")
    sentinel_setup.wait_replicated()
    sentinel_setup.primary.kill()
    sentinel_setup.wait_for_failover(sentinel_setup.primary, timeout=15)

    def evalsha() -> str | None:
        try:
            client.evalsha(sha, 0)
        except redis.exceptions.NoScriptError:
            return "NOSCRIPT"
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        return "ran"

    assert wait_for(evalsha, timeout=10, what="the new primary") == "NOSCRIPT"


def test_a_resumed_old_primary_takes_writes_until_demoted(
        sentinel_setup: SentinelSetup) -> None:
    """Split brain: connections made before a pause stay with the old primary. Once it
    is resumed it takes writes (it still believes it is the primary) until the sentinels
    demote it, about 10 s later (their INFO period for replicas); those writes are lost."""
    setup = sentinel_setup
    client = connect(setup.url)
    client.set("k", "before")
    setup.wait_replicated()
    setup.primary.pause()
    setup.wait_for_failover(setup.primary, timeout=15)
    setup.primary.resume()
    assert client.set("k", "into the void")  # acknowledged, by the old primary
    assert client.connection_pool.master_address == (HOST, setup.primary.port)
    resumed_at = time.monotonic()
    wait_for(lambda: setup.primary.info("replication").get("role") == "slave", timeout=20,
             what="the old primary demoted")
    print(f"\nold primary demoted {time.monotonic() - resumed_at:.1f}s after it came back")
    assert wait_for(lambda: answers(client, "k"), timeout=10, what="the new primary") == "before"


def answers(client: Any, key: str) -> str | None:
    try:
        return str(client.get(key))
    except (redis.ConnectionError, redis.TimeoutError):
        return None
