"""Trees that change while they run, on real node processes and a real redis-server:
grafts (from job code and the CLI), retries, timeouts, reruns, results and progress."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from jobgrove import Client
from tests.cluster import REPO, Cluster, flat, runs, wait_done, wait_state
from tests.helpers import wait_for

pytestmark = pytest.mark.redis


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobgrove", "--redis", redis_url, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30)


def mark(path: Path, name: str, **params: Any) -> dict[str, Any]:
    return {"kind": "jgc-mark", "title": name,
            "params": {"path": str(path), "mark": name, **params}}


def by_title(client: Client, root: str) -> dict[str, dict[str, Any]]:
    return {j["title"]: j for j in flat(client, root).values()}


def run_times(path: Path, name: str) -> list[float]:
    return [float(line.split()[2]) for line in path.read_text().splitlines()
            if line.split()[0] == name]


def test_a_job_grafts_work_its_parent_then_waits_for(redis_url: str, cluster: Cluster,
                                                      tmp_path: Path) -> None:
    cluster.start_many(["g1", "g2"], redis_url)
    client = Client(redis_url)
    marks = tmp_path / "runs"
    grafted = [mark(marks, "deploy-a"), {**mark(marks, "deploy-b"), "node": "g2",
                                         "children": [mark(marks, "prepare-b")]}]
    root = client.submit({"kind": "jgc-collect", "node": "g1", "title": "root", "children": [
        {"kind": "jgc-grafter", "title": "prepare", "params": {"spec": grafted}}]})
    status = wait_done(client, root)
    assert status["state"] == "SUCCESS", status
    jobs = by_title(client, root)
    assert {t for t in jobs} == {"root", "prepare", "deploy-a", "deploy-b", "prepare-b"}
    # Under the root (the grafting job's parent), which waited for them too.
    assert jobs["deploy-a"]["parent"] == root and jobs["deploy-b"]["parent"] == root
    assert jobs["deploy-b"]["node"] == "g2" and jobs["deploy-a"]["node"] == "g1"
    assert jobs["prepare-b"]["parent"] == jobs["deploy-b"]["id"]
    assert all(jobs[t]["finished"] <= jobs["root"]["started"]
               for t in ("deploy-a", "deploy-b", "prepare-b"))
    assert sorted(jobs["prepare"]["result"]["grafted"]) == sorted(
        [jobs["deploy-a"]["id"], jobs["deploy-b"]["id"]])
    # The parent got its grafted children's results too, in order.
    assert [c and c.get("pid") for c in jobs["root"]["result"]["children"]][1:] == [
        runs(marks)["deploy-a"][0], runs(marks)["deploy-b"][0]]
    assert all(len(pids) == 1 for pids in runs(marks).values())


def test_a_job_grafts_under_another_job_than_its_parent(redis_url: str, cluster: Cluster,
                                                        tmp_path: Path) -> None:
    cluster.start("g3", redis_url)
    client = Client(redis_url)
    marks = tmp_path / "runs"
    root = client.submit({"kind": "jgc-collect", "node": "g3", "title": "root", "children": [
        {"kind": "noop", "title": "mid", "children": [
            {"kind": "jgc-grafter", "title": "prepare",
             "params": {"spec": mark(marks, "late"), "under": "root"}}]}]})
    assert wait_done(client, root)["state"] == "SUCCESS"
    jobs = by_title(client, root)
    assert jobs["late"]["parent"] == root  # not under "mid", the grafter's parent
    assert jobs["late"]["finished"] <= jobs["root"]["started"]
    assert len(runs(marks)["late"]) == 1
    # Under a job of another tree: refused, the grafting job fails, nothing is added.
    other = client.submit({"kind": "noop", "node": "g3", "children": [
        {"kind": "jgc-grafter", "title": "stray",
         "params": {"spec": mark(marks, "never"), "under": root}}]})
    assert wait_done(client, other)["state"] == "ABORTED"
    stray = by_title(client, other)["stray"]
    assert stray["state"] == "FAILED" and "not of this job's tree" in stray["summary"]
    assert set(by_title(client, root)) == {"root", "mid", "prepare", "late"}


def test_graft_from_the_cli_and_its_refusals(redis_url: str, cluster: Cluster,
                                             tmp_path: Path) -> None:
    cluster.start("c1", redis_url)
    client = Client(redis_url)
    gate = tmp_path / "gate"
    root = client.submit({"kind": "noop", "node": "c1", "title": "root", "children": [
        {"kind": "jgc-gate", "title": "gate", "params": {"path": str(gate)}}]})
    gate_id = by_title(client, root)["gate"]["id"]
    wait_state(client, gate_id, "RUNNING")
    spec = tmp_path / "more.json"
    spec.write_text(json.dumps([{"kind": "noop", "title": "extra-1"},
                                {"kind": "noop", "title": "extra-2", "retries": 1}]))
    done = cli(redis_url, "graft", root[:8], str(spec))
    assert done.returncode == 0, done.stderr
    new_ids = done.stdout.split()
    assert len(new_ids) == 2 and all(len(i) == 36 for i in new_ids)
    assert {client.job(i)["title"] for i in new_ids} == {"extra-1", "extra-2"}

    def keys() -> int:
        return len(client.store.client.keys("*"))

    before = keys()
    started = cli(redis_url, "graft", gate_id, str(spec))  # the gate is RUNNING
    assert started.returncode == 2 and "RUNNING" in started.stderr, started.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "noop", "retries": -1}))
    invalid = cli(redis_url, "graft", root, str(bad))
    assert invalid.returncode == 2 and "graft.retries" in invalid.stderr, invalid.stderr
    unknown = cli(redis_url, "graft", "00000000-0000-4000-8000-000000000000", str(spec))
    assert unknown.returncode == 2 and "unknown job id" in unknown.stderr
    assert keys() == before  # nothing written by any refusal
    gate.touch()
    assert wait_done(client, root)["state"] == "SUCCESS"
    finished = cli(redis_url, "graft", root, str(spec), "--json")
    assert finished.returncode == 2 and "SUCCESS" in finished.stderr
    # A tree that is aborting takes nothing either.
    aborting = client.submit({"kind": "noop", "node": "c1", "children": [
        {"kind": "jgc-gate", "params": {"path": str(tmp_path / "never")}}]})
    client.abort(aborting)
    refused = cli(redis_url, "graft", aborting, str(spec))
    assert refused.returncode == 2 and "aborting" in refused.stderr, refused.stderr


def test_retries_run_a_flaky_job_again_after_its_delay(redis_url: str, cluster: Cluster,
                                                       tmp_path: Path) -> None:
    node = cluster.start("r1", redis_url)
    client = Client(redis_url)
    marks = tmp_path / "runs"

    def flaky(name: str, fail: int, **more: Any) -> dict[str, Any]:
        return {"kind": "jgc-flaky", "title": name,
                "params": {"path": str(marks), "mark": name, "fail": fail}, **more}

    ok = client.submit({"kind": "noop", "node": "r1", "children": [
        flaky("twice", 2, retries=2, retry_delay=0.3)]})
    out = client.submit({"kind": "noop", "node": "r1", "children": [
        flaky("always", 9, retries=1, retry_delay=0.1),
        {"kind": "jgc-gate", "title": "sibling", "params": {"path": str(tmp_path / "n")}}]})
    status = wait_done(client, ok, timeout=20)
    assert status["state"] == "SUCCESS"
    twice = status["children"][0]
    assert twice["attempt"] == 3 and twice["result"] == {"runs": 3}
    times = run_times(marks, "twice")
    assert len(times) == 3
    # Delays honoured: 0.3 s, then twice as long.
    assert times[1] - times[0] >= 0.3 - 0.05 and times[2] - times[1] >= 0.6 - 0.05, times
    log = (node.log_file(twice["id"])).read_text()
    for attempt in (1, 2, 3):
        assert f"(attempt {attempt} of 3)" in log
    # Retries exhausted: the job fails for good and its tree aborts, with it as cause.
    status = wait_done(client, out, timeout=20)
    jobs = by_title(client, out)
    assert jobs["always"]["state"] == "FAILED" and jobs["always"]["attempt"] == 2
    assert len(run_times(marks, "always")) == 2
    assert jobs["sibling"]["state"] == "ABORTED"
    assert jobs["sibling"]["cause"] == jobs["always"]["id"] == status["cause"]


def test_an_abort_during_a_retry_delay_ends_the_job(redis_url: str, cluster: Cluster,
                                                    tmp_path: Path) -> None:
    cluster.start("r2", redis_url)
    client = Client(redis_url)
    marks = tmp_path / "runs"
    root = client.submit({"kind": "noop", "node": "r2", "children": [
        {"kind": "jgc-flaky", "title": "slow", "retries": 3, "retry_delay": 1.5,
         "params": {"path": str(marks), "mark": "slow", "fail": 9}}]})
    job = by_title(client, root)["slow"]["id"]
    wait_for(lambda: client.job(job)["attempt"] == 2, timeout=10, what="a failed attempt")
    assert client.job(job)["state"] == "WAITING"
    client.abort(job)
    assert wait_done(client, root)["state"] == "ABORTED"
    assert client.job(job)["state"] == "ABORTED"
    failed_at = run_times(marks, "slow")[0]
    wait_for(lambda: time.time() > failed_at + 2.0, timeout=5, what="the delay to pass")
    assert len(run_times(marks, "slow")) == 1  # never ran again


def test_timeouts_fail_jobs_of_any_kind(redis_url: str, cluster: Cluster) -> None:
    cluster.start("t1", redis_url, abort_grace=1.0)
    client = Client(redis_url)
    started = time.monotonic()
    sleeper = client.submit({"kind": "sleep", "node": "t1", "timeout": 0.5,
                             "params": {"seconds": 30}})
    stubborn = client.submit({"kind": "jgc-stubborn", "node": "t1", "timeout": 0.3,
                              "params": {"seconds": 5}})
    status = wait_done(client, sleeper, timeout=10)
    assert status["state"] == "FAILED" and status["summary"] == "timed out after 0.5s"
    assert time.monotonic() - started < 5
    # A Python job that ignores the abort is fenced off after the grace: still FAILED,
    # and it says it timed out.
    status = wait_done(client, stubborn, timeout=10)
    assert status["state"] == "FAILED"
    assert status["summary"].startswith("timed out after 0.3s; did not stop within")
    assert time.monotonic() - started < 5
    # A timed-out attempt is a failed attempt: retries apply.
    retried = client.submit({"kind": "sleep", "node": "t1", "timeout": 0.3, "retries": 1,
                             "retry_delay": 0.1, "params": {"seconds": 30}})
    status = wait_done(client, retried, timeout=10)
    assert (status["state"], status["attempt"]) == ("FAILED", 2), status
    assert status["summary"] == "timed out after 0.3s"


def test_rerun_runs_only_what_did_not_succeed(redis_url: str, cluster: Cluster,
                                             tmp_path: Path) -> None:
    # One slot: the children run one after the other, in spec order (good, then flaky).
    cluster.start("u1", redis_url, concurrency=1)
    client = Client(redis_url)
    marks = tmp_path / "runs"
    gate = tmp_path / "gate"
    root = client.submit({"kind": "jgc-collect", "node": "u1", "title": "root", "children": [
        mark(marks, "good"),
        {"kind": "jgc-flaky", "title": "flaky", "params": {"path": str(marks),
                                                           "mark": "flaky", "fail": 1}},
        {"kind": "jgc-gate", "title": "gate", "params": {"path": str(gate)}}]})
    first = wait_done(client, root)
    assert first["state"] == "ABORTED" and first["run"] == 1
    jobs = by_title(client, root)
    assert jobs["good"]["state"] == "SUCCESS" and jobs["flaky"]["state"] == "FAILED"
    good_result = jobs["good"]["result"]
    gate.touch()
    done = cli(redis_url, "rerun", root[:10])
    assert done.returncode == 0 and done.stdout.strip() == root, done.stderr
    again = cli(redis_url, "rerun", root)  # not done yet (or running): refused
    assert again.returncode == 2 and "cannot rerun" in again.stderr, again.stderr
    second = wait_done(client, root)
    assert second["state"] == "SUCCESS" and second["run"] == 2
    seen = runs(marks)
    assert len(seen["good"]) == 1 and len(seen["flaky"]) == 2  # only what failed ran
    jobs = by_title(client, root)
    # The parent sees the results of the children that succeeded in the first run.
    assert jobs["root"]["result"]["children"][0] == good_result
    succeeded = cli(redis_url, "rerun", root)
    assert succeeded.returncode == 2 and "succeeded" in succeeded.stderr


def test_results_and_progress_in_status_and_watch(redis_url: str, cluster: Cluster,
                                                  tmp_path: Path) -> None:
    node = cluster.start("p1", redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    address = next(n["address"] for n in client.nodes() if n["name"] == "p1")
    gate = tmp_path / "gate"
    root = client.submit({"kind": "jgc-progress", "node": "p1", "params": {
        "path": str(gate), "result": {"built": ["a", "b"]}}})
    with ws_connect(f"ws://{address}/ws") as ws:
        ws.send(json.dumps({"type": "watch", "tree": root}))
        seen: list[dict[str, Any]] = []

        def frame_with_progress() -> bool:
            frame = json.loads(ws.recv(timeout=5))
            seen.append(frame)
            tree = frame.get("tree") if frame["type"] == "tree" else None
            return bool(frame["type"] == "progress" or (isinstance(tree, dict)
                                                         and tree.get("progress")))

        wait_for(frame_with_progress, timeout=10, what="progress over the websocket")
        status = json.loads(cli(redis_url, "status", root, "--json").stdout)
        assert status["progress"] == {"fraction": 0.5, "message": "half way"}
        assert status["state"] == "RUNNING" and status["result"] is None
        shown = cli(redis_url, "status", root).stdout
        assert "50%" in shown and "half way" in shown
        gate.touch()
        wait_for(lambda: json.loads(ws.recv(timeout=5))["type"] == "done", timeout=10,
                 what="the done frame")
    status = json.loads(cli(redis_url, "status", root, "--json").stdout)
    assert status["state"] == "SUCCESS" and status["result"] == {"built": ["a", "b"]}
    assert client.status(root)["result"] == {"built": ["a", "b"]}
    assert node.running
