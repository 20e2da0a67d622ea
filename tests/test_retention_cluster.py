"""Delete, prune and automatic retention with real node processes and the real CLI:
refusals, dry runs, archives, log files gone on every node (after a restart too),
Redis back to its key counts, and 20,000 trees pruned while a tree keeps running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.jobs.log import log_path
from tests.bulk import abort_many, submit_many
from tests.cluster import REPO, Cluster, flat, wait_done, wait_state
from tests.helpers import RedisServer, wait_for
from tests.test_retention import snapshot

pytestmark = pytest.mark.redis


def cli(*args: str, redis: str | None = None, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    extra = ["--redis", redis] if redis else []
    return subprocess.run([sys.executable, "-m", "jobgrove", *args, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def logs_of(client: Client, root: str, dirs: dict[str, Path]) -> list[Path]:
    """The log files of every job of the tree that ran, on their nodes."""
    return [log_path(dirs[j["node"]], j["id"]) for j in flat(client, root).values()
            if j["started"] is not None]


def test_delete_refused_while_running_then_everything_goes(redis_url: str, cluster: Cluster,
                                                            tmp_path: Path) -> None:
    nodes = cluster.start_many(["d1", "d2"], redis_url)
    client = Client(redis_url)
    before = snapshot(client.store)
    gate = tmp_path / "gate"
    root = client.submit({"kind": "shell", "node": "d1", "params": {"command": "echo root"},
                          "tags": {"workspace": "acme"}, "children": [
        {"kind": "shell", "node": "d2", "params": {"command": "echo child"}},
        {"kind": "jgc-gate", "node": "d2", "params": {"path": str(gate)}}]})
    gated = next(j["id"] for j in flat(client, root).values() if j["kind"] == "jgc-gate")
    wait_state(client, gated, "RUNNING")
    refused = cli("delete", root, redis=redis_url)
    assert refused.returncode == 2, refused
    assert "RUNNING" in refused.stderr and root in refused.stderr
    assert client.status(root)["id"] == root  # untouched
    gate.touch()
    wait_done(client, root)
    files = logs_of(client, root, {n: p.log_dir for n, p in nodes.items()})
    assert len(files) == 3 and all(f.exists() for f in files)
    done = cli("delete", gated, redis=redis_url)  # any job id of the tree
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted tree {root}"
    wait_for(lambda: not any(f.exists() for f in files), timeout=10,
             what="the nodes to remove the tree's log files")
    wait_for(lambda: snapshot(client.store) == before, timeout=10,
             what="Redis to hold what it held before the tree")
    unknown = cli("delete", root, redis=redis_url)
    assert unknown.returncode == 2 and "unknown job id" in unknown.stderr


def test_log_files_of_a_tree_deleted_while_its_node_was_down_go_when_it_is_back(
        redis_url: str, cluster: Cluster) -> None:
    node = cluster.start("r1", redis_url)
    client = Client(redis_url)
    root = client.submit({"kind": "shell", "node": "r1", "params": {"command": "echo hi"}})
    wait_done(client, root)
    file = log_path(node.log_dir, root)
    assert file.exists()
    assert node.stop() == 0
    client.delete(root)
    assert file.exists()  # nobody there to remove it
    cluster.start("r1", redis_url, log_dir=node.log_dir)
    wait_for(lambda: not file.exists(), timeout=10, what="the restarted node to remove it")
    wait_for(lambda: not client.store.client.exists(client.keys.logs_gone("r1")), timeout=5)


def test_prune_dry_run_archive_json(redis_url: str, cluster: Cluster, tmp_path: Path) -> None:
    node = cluster.start("p1", redis_url)
    client = Client(redis_url)
    before = snapshot(client.store)
    roots = [client.submit({"kind": "shell", "node": "p1", "title": f"t{i}",
                            "params": {"command": f"echo tree {i}"},
                            "children": [{"kind": "noop"}]}) for i in range(4)]
    gate = tmp_path / "gate"
    busy = client.submit({"kind": "jgc-gate", "node": "p1", "params": {"path": str(gate)}})
    for root in roots:
        wait_done(client, root)
    wait_state(client, busy, "RUNNING")
    files = [f for root in roots for f in logs_of(client, root, {"p1": node.log_dir})]
    result = cli("prune", "--older-than", "1h", "--json", redis=redis_url)
    assert result.returncode == 0 and json.loads(result.stdout) == {"deleted": 0, "trees": []}
    result = cli("prune", "--older-than", "0", "--dry-run", "--json", redis=redis_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"would_delete": 4, "trees": roots}
    assert all(client.status(root) for root in roots)  # nothing deleted
    archive = tmp_path / "archive"
    result = cli("prune", "--older-than", "0s", "--archive-dir", str(archive), "--json",
                 redis=redis_url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"deleted": 4, "trees": roots}
    assert sorted(p.name for p in archive.iterdir()) == sorted(f"{r}.json" for r in roots)
    saved = json.loads((archive / f"{roots[1]}.json").read_text())
    assert saved["id"] == roots[1] and saved["title"] == "t1" and saved["state"] == "SUCCESS"
    assert saved["children"][0]["state"] == "SUCCESS" and "children" in saved["children"][0]
    assert client.job(busy)["state"] == "RUNNING"  # not done: kept
    wait_for(lambda: not any(f.exists() for f in files), timeout=10, what="log files gone")
    gate.touch()
    wait_done(client, busy)
    result = cli("prune", "--older-than", "0", redis=redis_url)
    assert result.returncode == 0 and result.stdout.strip() == "deleted 1 tree(s)"
    wait_for(lambda: snapshot(client.store) == before, timeout=10,
             what="Redis to hold what it held before the trees")


def test_bad_input_is_refused_and_deletes_nothing(redis_url: str) -> None:
    client = Client(redis_url)
    roots = submit_many(client.store.client, 3)
    abort_many(client.store.client, roots)
    for bad in ("7x", "-1d", ""):
        result = cli("prune", "--older-than", bad, redis=redis_url)
        assert result.returncode == 2, result
        assert f"invalid duration {bad!r}" in result.stderr
    result = cli("prune", f"--older-than={'-1d'}", redis=redis_url)
    assert result.returncode == 2 and "negative" in result.stderr
    for bad in ("7x", "-1d"):
        result = cli("node", "--name", "x", "--retention", bad, redis=redis_url)
        assert result.returncode == 2 and f"invalid duration {bad!r}" in result.stderr
    result = cli("delete", "39d4f79d-2196-4d80-9cf8-fe18c4c27618", redis=redis_url)
    assert result.returncode == 2 and "unknown job id" in result.stderr
    assert client.store.client.zcard(client.keys.trees) == 3


def test_prune_and_delete_with_redis_down_exit_3(durable_redis: RedisServer) -> None:
    client = Client(durable_redis.url)
    roots = submit_many(client.store.client, 5)
    abort_many(client.store.client, roots)
    durable_redis.stop()
    for args in (("prune", "--older-than", "0"), ("delete", roots[0])):
        result = cli(*args, redis=durable_redis.url)
        assert result.returncode == 3, result
        assert "Redis unavailable" in result.stderr and "Traceback" not in result.stderr
    durable_redis.start()
    assert Client(durable_redis.url).store.client.zcard(client.keys.trees) == 5


def test_retention_prunes_20000_trees_while_a_tree_keeps_running(
        redis_url: str, cluster: Cluster) -> None:
    client = Client(redis_url)
    redis = client.store.client
    assert snapshot(client.store) == {}
    started = time.monotonic()
    old = submit_many(redis, 20_000)  # for a node that is not there: they wait
    abort_many(redis, old)  # and end, so they are done
    setup = time.monotonic() - started
    node = cluster.start("t1", redis_url, extra=["--retention", "1s"])
    chain: dict[str, Any] = {"kind": "sleep", "node": "t1", "params": {"seconds": 0.05}}
    for _ in range(119):
        chain = {"kind": "sleep", "node": "t1", "params": {"seconds": 0.05},
                 "children": [chain]}
    root = client.submit(chain)
    counts: list[tuple[float, int]] = []
    while True:  # watch the tree index shrink
        counts.append((time.time(), redis.zcard(client.keys.trees)))
        if counts[-1][1] <= 1 or time.monotonic() - started > 120:
            break
        time.sleep(0.02)
    first = next(t for t, n in counts if n < 20_001)
    last = counts[-1][0]
    assert counts[-1][1] == 1, counts[-5:]
    finished = sorted(j["finished"] for j in flat(client, root).values() if j["finished"])
    during = [t for t in finished if first <= t <= last]
    gaps = [b - a for a, b in zip([first, *during], [*during, last])]
    print(f"setup {setup:.1f}s; 20,000 trees pruned in {last - first:.2f}s while "
          f"{len(during)} jobs of the running tree finished, longest gap {max(gaps):.3f}s")
    assert len(during) >= 5 and max(gaps) < 1.0, (len(during), max(gaps))
    # The running tree was left alone; once done (and a second old) it goes too, logs
    # and all, and Redis holds nothing but the node's own registration.
    wait_done(client, root, timeout=60)
    files = logs_of(client, root, {"t1": node.log_dir})
    assert len(files) == 120 and all(f.exists() for f in files)
    wait_for(lambda: redis.zcard(client.keys.trees) == 0, timeout=15, what="the tree pruned")
    wait_for(lambda: not any(f.exists() for f in files), timeout=10, what="its logs gone")
    wait_for(lambda: set(snapshot(client.store)) == {
        client.keys.nodes, client.keys.lease("t1"), client.keys.epoch("t1")}, timeout=10,
        what="only the node's registration left")
