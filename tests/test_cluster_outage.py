"""Redis trouble with real node processes: redis-server stopped mid-tree, every pub/sub
connection killed, Redis paused, hints lost for good (reconciliation on the timer)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from jobgrove import Client
from jobgrove.messaging.keys import Keys
from tests.cluster import (
    LEASE,
    Cluster,
    NodeProc,
    chain,
    flat,
    record_of,
    wait_done,
    wait_state,
)
from tests.helpers import RedisServer, wait_for

pytestmark = pytest.mark.redis



def notifier(tmp_path: Path) -> tuple[str, Path]:
    """A --notify-command that appends ``EVENT NODE TIME`` to a file; (command, file)."""
    events = tmp_path / "notified"
    script = tmp_path / "notify.sh"
    script.write_text('#!/bin/sh\necho "$JOBGROVE_EVENT $JOBGROVE_NODE $(date +%s.%N)" >> "$1"\n')
    return f"sh {script} {events}", events


def notified(events: Path) -> Counter[tuple[str, str]]:
    if not events.exists():
        return Counter()
    return Counter(tuple(line.split()[:2]) for line in events.read_text().splitlines())


def health(node: NodeProc, address: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}/health", timeout=5) as response:
        return json.loads(response.read())


def gated_loop(gate: Path) -> str:
    """A shell command logging a line every 50 ms until ``gate`` exists."""
    return f'i=0; while [ ! -e {gate} ]; do echo "tick $i"; i=$((i+1)); sleep 0.05; done'


def test_redis_stopped_mid_tree(durable_redis: RedisServer, cluster: Cluster,
                                tmp_path: Path) -> None:
    url = durable_redis.url
    command, events = notifier(tmp_path)
    o1 = cluster.start("o1", url, notify_command=command, listen="127.0.0.1:0")
    o2 = cluster.start("o2", url, notify_command=command)
    client = Client(url)
    address = record_of(client, "o1")["address"]
    go_a, go_b = tmp_path / "go-a", tmp_path / "go-b"
    spec = {"kind": "noop", "node": "o1", "title": "root", "children": [
        # Ends while Redis is down: its outcome waits in o1's outbox.
        {"kind": "shell", "node": "o1", "title": "ends-during",
         "params": {"command": gated_loop(go_a)}},
        # Ends during the outage too; its parent must not start before Redis is back.
        {"kind": "noop", "node": "o2", "title": "parent", "children": [
            {"kind": "shell", "node": "o2", "title": "child-ends-during",
             "params": {"command": gated_loop(go_a)}}]},
        # Runs through the whole outage, logging, and ends after it.
        {"kind": "shell", "node": "o2", "title": "ends-after",
         "params": {"command": gated_loop(go_b)}},
    ]}
    root = client.submit(spec)
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    for title in ("ends-during", "child-ends-during", "ends-after"):
        wait_state(client, ids[title], "RUNNING")
    assert health(o1, address)["redis"] == "ok"

    down_at = time.time()
    durable_redis.stop()
    # Every node notices, and tells the administrator (once).
    wait_for(lambda: notified(events)[("redis_down", "o1")] and
             notified(events)[("redis_down", "o2")], timeout=10,
             what="both nodes to notify the outage")
    wait_for(lambda: health(o1, address)["redis"] == "unavailable", timeout=10,
             what="/health to report Redis unavailable")
    go_a.touch()
    for title, node in (("ends-during", o1), ("child-ends-during", o2)):
        wait_for(lambda n=node, t=title: "job ended: ok" in _log(n, ids[t]), timeout=10,
                 what=f"{title} to end during the outage")
    # The job running through the outage keeps logging; the outage lasts at least two
    # leases (every lease in Redis has expired when it comes back).
    seen = _log(o2, ids["ends-after"]).count("tick")
    wait_for(lambda: _log(o2, ids["ends-after"]).count("tick") >= seen + 10, timeout=10,
             what="the running job to keep logging while Redis is down")
    wait_for(lambda: time.time() - down_at > 2 * LEASE + 0.2, timeout=10,
             what="an outage of two leases")
    restart_at = time.time()
    durable_redis.start()
    print(f"Redis was down for {restart_at - down_at:.2f}s")
    wait_for(lambda: notified(events)[("redis_up", "o1")] and
             notified(events)[("redis_up", "o2")], timeout=15,
             what="both nodes to notify the recovery")
    # What ended during the outage is recorded now; the parent runs after Redis is back.
    wait_state(client, ids["ends-during"], "SUCCESS")
    wait_state(client, ids["child-ends-during"], "SUCCESS")
    wait_state(client, ids["parent"], "SUCCESS")
    go_b.touch()
    status = wait_done(client, root, timeout=15)
    assert status["state"] == "SUCCESS", flat(client, root)
    jobs = {j["title"]: j for j in flat(client, root).values()}
    for job in jobs.values():
        assert job["state"] == "SUCCESS"
        # Nothing started while Redis was down.
        assert not down_at < job["started"] < restart_at, (job["title"], job["started"])
    assert jobs["parent"]["started"] > restart_at
    assert jobs["root"]["started"] > restart_at
    print("recorded 'finished' of jobs that ended during the outage, relative to the "
          "restart: " + ", ".join(f"{t}: {jobs[t]['finished'] - restart_at:+.2f}s"
                                  for t in ("ends-during", "child-ends-during")))
    assert health(o1, address)["redis"] == "ok"
    # Nobody was reaped after the outage (grace period), both nodes alive.
    for node in (o1, o2):
        assert node.running and "lost" not in node.stderr(), node.stderr()
    wait_for(lambda: all(n["alive"] for n in client.nodes()), timeout=10, what="leases")
    # Exactly one notification for the outage and one for the recovery, per node.
    time.sleep(0.5)  # a late flap would show up here
    counts = notified(events)
    assert counts == Counter({("redis_down", "o1"): 1, ("redis_down", "o2"): 1,
                              ("redis_up", "o1"): 1, ("redis_up", "o2"): 1}), counts


def test_pubsub_connections_killed_mid_run(own_redis: RedisServer, cluster: Cluster,
                                           tmp_path: Path) -> None:
    url = own_redis.url
    command, events = notifier(tmp_path)
    nodes = cluster.start_many(["p1", "p2", "p3"], url, notify_command=command)
    client = Client(url)
    go = tmp_path / "go"
    root = client.submit({"kind": "noop", "node": "p1", "title": "root", "children": [
        {"kind": "shell", "node": name, "title": f"gated-{name}",
         "params": {"command": gated_loop(go)},
         "children": [{"kind": "noop", "node": other, "title": f"leaf-{name}"}]}
        for name, other in (("p1", "p2"), ("p2", "p3"), ("p3", "p1"))]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    for name in nodes:
        wait_state(client, ids[f"gated-{name}"], "RUNNING")
    admin = own_redis.client()
    killed = admin.client_kill_filter(_type="pubsub")
    assert killed >= 3
    go.touch()
    status = wait_done(client, root, timeout=15)
    assert status["state"] == "SUCCESS", flat(client, root)
    # Every node is subscribed again.
    wait_for(lambda: all(n == 1 for _, n in admin.pubsub_numsub(
        *(client.keys.node_channel(name) for name in nodes))), timeout=10,
        what="every node to resubscribe")
    # Recoveries are announced once Redis has stayed reachable for a second.
    counts = wait_for(lambda: (c := notified(events)) and all(
        c[("redis_up", name)] >= 1 for name in nodes) and c, timeout=10,
        what="a recovery notification from every node")
    print(f"notifications after CLIENT KILL TYPE pubsub: {dict(counts)}")
    for name in nodes:
        assert counts[("redis_down", name)] == 1, counts
        assert counts[("redis_up", name)] == 1, counts
    after = client.submit({"kind": "noop", "node": "p1", "children": [
        {"kind": "noop", "node": "p2"}, {"kind": "noop", "node": "p3"}]})
    assert wait_done(client, after)["state"] == "SUCCESS"


def test_pubsub_killed_over_and_over(own_redis: RedisServer, cluster: Cluster) -> None:
    """Hints lost all the time: reconciliation on every resubscription carries the trees."""
    url = own_redis.url
    nodes = cluster.start_many(["s1", "s2"], url)
    client = Client(url)
    admin = own_redis.client()
    stop = threading.Event()
    kills = Counter[str]()

    def killer() -> None:
        while not stop.wait(0.02):
            with contextlib.suppress(redis.RedisError):
                kills["clients"] += admin.client_kill_filter(_type="pubsub")
                kills["rounds"] += 1

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        roots = [client.submit({"kind": "noop", "node": "s1", "children": [
            chain(["s1", "s2"], 12), chain(["s2", "s1"], 12)]}) for _ in range(3)]
        started = time.monotonic()
        for root in roots:
            assert wait_done(client, root, timeout=40)["state"] == "SUCCESS"
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
    print(f"3 trees of 25 jobs over 2 nodes under {kills['rounds']} rounds of CLIENT KILL "
          f"TYPE pubsub ({kills['clients']} connections killed): {took:.2f}s")
    for node in nodes.values():
        assert node.running
        print(f"{node.name}: {node.stderr().count('jobgrove alert')} outage alerts")


def test_redis_paused(own_redis: RedisServer, cluster: Cluster, tmp_path: Path) -> None:
    url = own_redis.url
    command, events = notifier(tmp_path)
    c1 = cluster.start("c1", url, listen="127.0.0.1:0", notify_command=command)
    others = cluster.start_many(["c2", "c3"], url, notify_command=command)
    client = Client(url)
    address = record_of(client, "c1")["address"]
    go = tmp_path / "go"
    root = client.submit({"kind": "noop", "node": "c1", "title": "root", "children": [
        {"kind": "shell", "node": "c1", "title": "shell-c1",
         "params": {"command": gated_loop(go)}},
        {"kind": "jgc-gate", "node": "c2", "title": "gate-c2", "params": {"path": str(go)}},
        {"kind": "jgc-gate", "node": "c3", "title": "gate-c3", "params": {"path": str(go)}},
    ]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    for title in ("shell-c1", "gate-c2", "gate-c3"):
        wait_state(client, ids[title], "RUNNING")
    admin = own_redis.client()
    admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
    paused_at = time.monotonic()
    # The endpoint answers while Redis is paused (no hang).
    started = time.monotonic()
    reply = health(c1, address)
    assert time.monotonic() - started < 3.0, reply
    go.touch()
    # Blocked until the pause ends.
    own_redis.client().ping()
    print(f"pause ended after {time.monotonic() - paused_at:.2f}s")
    status = wait_done(client, root, timeout=20)
    jobs = {j["title"]: j for j in flat(client, root).values()}
    assert status["state"] == "SUCCESS", {t: (j["state"], j["summary"]) for t, j in
                                          jobs.items()}
    for node in (c1, *others.values()):
        assert node.running and "lost" not in node.stderr(), node.stderr()
    wait_for(lambda: all(n["alive"] for n in client.nodes()), timeout=10, what="leases")
    after = client.submit({"kind": "noop", "node": "c1", "children": [
        {"kind": "noop", "node": "c2"}, {"kind": "noop", "node": "c3"}]})
    assert wait_done(client, after)["state"] == "SUCCESS"
    print(f"notifications around CLIENT PAUSE 3000: {dict(notified(events))}")


@dataclasses.dataclass(frozen=True)
class DeafKeys(Keys):
    """Keys whose hints (node channels, and the scripts' channel prefix) reach nobody."""

    def node_channel(self, node: str) -> str:
        return f"void:ch:node:{node}"

    @property
    def channel_prefix(self) -> str:
        return "void:ch:"


def test_reconciliation_timer_finds_what_pubsub_never_said(redis_url: str, cluster: Cluster,
                                                           tmp_path: Path) -> None:
    node = cluster.start("r1", redis_url)
    client = Client(redis_url)
    victim = client.submit({"kind": "jgc-gate", "node": "r1",
                            "params": {"path": str(tmp_path / "never")}})
    wait_state(client, victim, "RUNNING")
    deaf = Client(redis_url)
    deaf.keys = deaf.store.keys = DeafKeys()
    submitted = time.monotonic()
    silent = deaf.submit({"kind": "noop", "node": "r1", "children": [{"kind": "noop"}]})
    deaf.abort(victim)  # the abort hint goes nowhere either
    status = wait_done(client, silent, timeout=15)
    took = time.monotonic() - submitted
    assert status["state"] == "SUCCESS"
    status = wait_done(client, victim, timeout=15)
    assert status["state"] == "ABORTED"
    print(f"tree and abort found by the reconciliation timer after {took:.2f}s")
    assert node.running


def _log(node: NodeProc, job_id: str) -> str:
    try:
        return node.log_file(job_id).read_text()
    except OSError:
        return ""



def test_redis_pause_is_an_outage_for_the_leases(own_redis: RedisServer, cluster: Cluster,
                                                 tmp_path: Path) -> None:
    """Nobody can renew a lease while Redis is paused, so every lease lapses: when Redis
    answers again, a node a little slower to renew than the others (here: stopped for
    a third of a lease) must get the same grace as after an outage, not be reaped."""
    url = own_redis.url
    nodes = cluster.start_many(["q1", "q2", "q3"], url)
    client = Client(url)
    go = tmp_path / "go"
    root = client.submit({"kind": "noop", "node": "q1", "title": "root", "children": [
        {"kind": "jgc-gate", "node": name, "title": f"gate-{name}", "params": {"path": str(go)}}
        for name in nodes]})
    ids = {j["title"]: j["id"] for j in flat(client, root).values()}
    for name in nodes:
        wait_state(client, ids[f"gate-{name}"], "RUNNING")
    admin = own_redis.client()
    admin.execute_command("CLIENT", "PAUSE", str(int(3 * LEASE * 1000)), "ALL")
    nodes["q2"].signal(signal.SIGSTOP)
    try:
        own_redis.client().ping()  # returns when the pause ends
        resumed = time.monotonic()
        # q2 is slower to get going again than the others.
        wait_for(lambda: time.monotonic() - resumed > LEASE / 3, timeout=5,
                 what="a third of a lease")
    finally:
        nodes["q2"].signal(signal.SIGCONT)
    go.touch()
    status = wait_done(client, root, timeout=20)
    jobs = {j["title"]: j for j in flat(client, root).values()}
    assert status["state"] == "SUCCESS", {t: (j["state"], j["summary"]) for t, j in
                                          jobs.items()}
    for node in nodes.values():
        assert "node q2 lost" not in node.stderr()


def test_redis_refusing_writes_for_a_while(own_redis: RedisServer, cluster: Cluster,
                                           tmp_path: Path) -> None:
    """Redis answers, but with errors (here OOM; READONLY after a failover, MISCONF
    when it cannot persist are alike): the node must ride it out like an outage."""
    url = own_redis.url
    node = cluster.start("w1", url)
    client = Client(url)
    go = tmp_path / "go"
    root = client.submit({"kind": "jgc-gate", "node": "w1", "params": {"path": str(go)}})
    wait_state(client, root, "RUNNING")
    admin = own_redis.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        # The node's next heartbeats are refused.
        wait_for(lambda: admin.info("errorstats").get("errorstat_OOM", {}).get("count", 0)
                 >= 1, timeout=10, what="the node to be refused writes")
        go.touch()
    finally:
        admin.config_set("maxmemory", "0")
    status = wait_done(client, root, timeout=15)
    assert status["state"] == "SUCCESS"
    assert node.running
    assert "Unhandled exception" not in node.stderr(), node.stderr()[-4000:]
    again = client.submit({"kind": "noop", "node": "w1"})
    assert wait_done(client, again, timeout=10)["state"] == "SUCCESS"
    wait_for(lambda: record_of(client, "w1")["alive"], timeout=10, what="lease")
