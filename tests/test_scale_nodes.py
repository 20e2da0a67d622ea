"""Multi-node tree scenarios (real ``jobgrove node`` processes, tests/cluster.py) on a
real Redis Cluster and a real Sentinel setup: the scenarios of test_cluster_trees.py,
collected again with ``redis_url`` standing for each, plus a node's health on a
cluster."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from jobgrove import Client
from tests.cluster import Cluster, wait_done
from tests.conftest import flushed_url
from tests.helpers import wait_for
from tests.servers import ClusterSetup

# Collected again against this module's `redis_url` (below).
from tests.test_cluster_trees import (  # noqa: F401
    test_cross_node_handoff_latency,
    test_failure_on_one_node_aborts_running_jobs_on_the_others,
    test_tree_over_three_nodes_runs_leaf_first_where_assigned,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(params=["cluster", "sentinel"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """This module's stand-in for conftest's ``redis_url``."""
    return flushed_url(request, request.param)


def test_health_of_a_node_on_a_cluster(request: pytest.FixtureRequest, cluster: Cluster,
                                       shared_cluster: ClusterSetup, tmp_path: Path) -> None:
    url = flushed_url(request, "cluster")
    node = cluster.start("h1", url, listen="127.0.0.1:0")
    client = Client(url)
    record = wait_for(lambda: (client.registry.record("h1") or {}).get("address"),
                      timeout=10, what="the node's address")

    def health() -> dict[str, object]:
        with urllib.request.urlopen(f"http://{record}/health", timeout=5) as reply:
            body: dict[str, object] = json.loads(reply.read())
            return body

    assert wait_for(lambda: health()["redis"] == "ok", timeout=10, what="redis ok")
    root = client.submit({"kind": "noop", "node": "h1"})
    assert wait_done(client, root)["state"] == "SUCCESS"
    assert node.running
