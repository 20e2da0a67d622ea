"""GET /metrics of real node processes, read with prometheus_client's own parser: the
contract's names are there, the counters match the jobs the node ran, and with a
cluster secret it needs a token like every other request."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobgrove import Client
from jobgrove.endpoint.auth import mint_token
from tests.cluster import Cluster, flat, record_of, wait_done
from tests.helpers import wait_for

pytestmark = pytest.mark.redis


def scrape(address: str, token: str | None = None) -> dict[str, Any]:
    """name -> {labels (sorted tuple): value} for every sample."""
    request = urllib.request.Request(f"http://{address}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def address_of(redis_url: str, name: str) -> str:
    record = record_of(Client(redis_url), name)
    assert record is not None
    return str(record["address"])


def test_counters_match_the_jobs_run(redis_url: str, cluster: Cluster) -> None:
    cluster.start("m1", redis_url, listen="127.0.0.1:0", concurrency=4)
    client = Client(redis_url)
    roots = [client.submit({"kind": "noop", "node": "m1"}) for _ in range(5)]
    roots.append(client.submit({"kind": "noop", "node": "m1", "children": [
        {"kind": "shell", "params": {"command": "echo hi"}},
        {"kind": "sleep", "params": {"seconds": 0.2}}]}))
    roots.append(client.submit({"kind": "noop", "node": "m1", "children": [
        {"kind": "fail", "params": {"message": "on purpose"}},
        {"kind": "sleep", "params": {"seconds": 30}}]}))
    for root in roots:
        wait_done(client, root)
    ran = Counter((job["state"], job["kind"]) for root in roots
                  for job in flat(client, root).values() if job["started"] is not None)
    assert ran[("ABORTED", "sleep")] == 1 and ran[("FAILED", "fail")] == 1
    address = address_of(redis_url, "m1")

    def finished(samples: dict[str, Any]) -> Counter[tuple[str, str]]:
        return Counter({(dict(k)["state"], dict(k)["kind"]): int(v) for k, v in
                        samples.get("jobgrove_jobs_finished_total", {}).items()})

    # The outcomes are counted once Redis has them (they all are: the trees are done).
    samples = wait_for(lambda: (s := scrape(address)) and finished(s) == ran
                       and s["jobgrove_jobs_running"][()] == 0 and s,
                       timeout=5, what="the counters to match")
    assert samples["jobgrove_claims_total"][()] == sum(ran.values())
    assert samples["jobgrove_slots"][()] == 4
    assert samples["jobgrove_redis_up"][()] == 1
    assert samples["jobgrove_viewers"][()] == 0
    assert samples["jobgrove_outbox_length"][()] == 0
    assert samples["jobgrove_reconciliations_total"][()] >= 1
    assert samples["jobgrove_trees_stored"][()] == len(roots)
    durations = samples["jobgrove_job_duration_seconds_count"]
    assert durations[(("kind", "noop"),)] == ran[("SUCCESS", "noop")]
    assert durations[(("kind", "sleep"),)] == 2
    buckets = samples["jobgrove_job_duration_seconds_bucket"]
    assert buckets[(("kind", "sleep"), ("le", "+Inf"))] == 2
    # One slept 0.2 s, the other was aborted at once.
    assert buckets[(("kind", "sleep"), ("le", "0.1"))] <= 1
    assert samples["jobgrove_job_duration_seconds_sum"][(("kind", "sleep"),)] >= 0.2
    info = samples["jobgrove_node_info"]
    assert [dict(k)["node"] for k in info] == ["m1"]


def test_metrics_need_a_token_when_the_cluster_has_a_secret(redis_url: str, cluster: Cluster,
                                                            tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-s3cr3t-s3cr3t-s3cr3t\n")
    secret.chmod(0o600)
    cluster.start("m2", redis_url, listen="127.0.0.1:0",
                  extra=["--secret-file", str(secret)])
    address = address_of(redis_url, "m2")
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(address)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as forged:
        scrape(address, token=mint_token(b"another secret, not this one", 60))
    assert forged.value.code == 401
    token = mint_token(secret.read_bytes().strip(), 60)
    samples = scrape(address, token=token)
    assert samples["jobgrove_slots"][()] == 4 and samples["jobgrove_redis_up"][()] == 1
    assert token not in str(samples)
