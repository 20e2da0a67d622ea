"""Failovers mid-tree, with real node processes (tests/cluster.py) on real servers:
the Sentinel primary killed (-9) after the replica stopped receiving, so the promoted
replica lacks the last claims and outcomes; a cluster primary with a replica killed;
and ``--min-replicas-ack``, which runs nothing a replica does not have.

Every tree reaches a consistent final state, no job runs twice (``jgc-mark`` jobs
write one line per run), and every outcome Redis acknowledged is in the final state
(each marking job's result is the pid of its one run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client, StoreUnavailableError
from jobgrove.messaging.connection import connect
from jobgrove.messaging.store import Store
from tests.cluster import Cluster, NodeProc, flat, runs, wait_done
from tests.helpers import free_port, wait_for
from tests.servers import HOST, ClusterSetup, SentinelSetup

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(90)]


def spec(tag: str, nodes: list[str], tmp: Path, pairs: int = 4) -> dict[str, Any]:
    """root <- [mark <- gate(go)] * pairs + [gate(go2)] per node: the gates hold until
    the test opens them; each mark runs when its gate succeeded."""
    marks = tmp / "marks"
    children = []
    for i in range(pairs):
        node = nodes[i % len(nodes)]
        children.append({"kind": "jgc-mark", "node": node, "title": f"{tag}-mark{i}",
                         "params": {"path": str(marks), "mark": f"{tag}-mark{i}"},
                         "children": [{"kind": "jgc-gate", "node": node,
                                       "title": f"{tag}-gate{i}",
                                       "params": {"path": str(tmp / "go")}}]})
    children += [{"kind": "jgc-gate", "node": node, "title": f"{tag}-held-{node}",
                  "params": {"path": str(tmp / "go2")}} for node in nodes]
    return {"kind": "noop", "node": nodes[0], "title": tag, "children": children}


def by_title(client: Any, root: str) -> dict[str, dict[str, Any]]:
    return {j["title"]: j for j in flat(client, root).values()}


def states_of(client: Any, root: str, prefix: str) -> set[str] | None:
    try:
        return {j["state"] for t, j in by_title(client, root).items() if t.startswith(prefix)}
    except Exception:
        return None


def check_final(client: Client, roots: list[str], tmp: Path) -> dict[str, list[int]]:
    """Each tree SUCCESS; each mark ran exactly once, and the recorded result is that
    run's (no outcome lost, none made up)."""
    marks = runs(tmp / "marks")
    for root in roots:
        status = wait_done(client, root, timeout=30)
        assert status["state"] == "SUCCESS", by_title(client, root)
        for title, job in by_title(client, root).items():
            assert job["state"] == "SUCCESS", (title, job)
            if "-mark" in title:
                assert len(marks[title]) == 1, f"{title} ran {len(marks.get(title, []))} times"
                assert job["result"] == {"pid": marks[title][0]}, (title, job["result"])
    return marks


def logged(nodes: list[NodeProc], text: str) -> bool:
    return any(text in node.stderr() for node in nodes)


def test_sentinel_failover_that_loses_the_last_transitions(
        sentinel_setup: SentinelSetup, cluster: Cluster, tmp_path: Path) -> None:
    setup = sentinel_setup
    nodes = list(cluster.start_many(["f1", "f2"], setup.url, lease=3.0).values())
    client = Client(setup.url)
    root = client.submit(spec("s", ["f1", "f2"], tmp_path))
    wait_for(lambda: states_of(client, root, "s-gate") == {"RUNNING"}
             and states_of(client, root, "s-held") == {"RUNNING"}, timeout=15,
             what="the gates running")
    setup.wait_replicated()
    # The replica stops receiving (it follows a primary that does not exist): what
    # happens from here on is on the primary only, acknowledged to the nodes.
    setup.replica.client().execute_command("REPLICAOF", HOST, str(free_port()))
    (tmp_path / "go").touch()
    on_primary = setup.primary.client()
    wait_for(lambda: {on_primary.hget(client.keys.tree_key(root, "state"), j["id"])
                      for t, j in by_title(client, root).items() if "-mark" in t}
             == {"SUCCESS"}, timeout=15, what="the marks recorded on the primary")
    killed_at = time.monotonic()
    setup.primary.kill()
    setup.wait_for_failover(setup.primary, timeout=20)
    promoted = time.monotonic() - killed_at
    # The promoted replica had none of it; the nodes record it all again.
    wait_for(lambda: states_of(client, root, "s-mark") == {"SUCCESS"}, timeout=20,
             what="the marks SUCCESS on the promoted replica")
    assert logged(nodes, "failover (or restart) detected")
    assert logged(nodes, "recorded again")
    (tmp_path / "go2").touch()
    marks = check_final(client, [root], tmp_path)
    print(f"\nsentinel: replica promoted {promoted:.1f}s after the kill; tree done "
          f"{time.monotonic() - killed_at:.1f}s after it; {len(marks)} marks, once each")


@pytest.mark.parametrize("cluster_setup", [1], indirect=True)
def test_cluster_primary_killed_mid_tree(cluster_setup: ClusterSetup, cluster: Cluster,
                                         tmp_path: Path) -> None:
    setup = cluster_setup
    nodes = list(cluster.start_many(["c1", "c2"], setup.url, lease=3.0,
                                    concurrency=16).values())
    client = Client(setup.url)
    trees = {f"t{i}": client.submit(spec(f"t{i}", ["c1", "c2"], tmp_path, pairs=2))
             for i in range(6)}
    roots = list(trees.values())
    victim = setup.primary_for(client.keys.tree_key(roots[0], "meta"))
    on_victim = [r for r in roots if setup.primary_for(client.keys.tree_key(r, "meta")) is victim]
    for tag, root in trees.items():
        wait_for(lambda tag=tag, root=root: states_of(client, root, f"{tag}-held")
                 == {"RUNNING"}, timeout=20, what=f"the held gates of {tag}")
    (tmp_path / "go").touch()
    for tag, root in trees.items():
        wait_for(lambda tag=tag, root=root: states_of(client, root, f"{tag}-mark")
                 == {"SUCCESS"}, timeout=20, what=f"the marks of {tag}")
    store = Store(connect(setup.url))
    # Replication is asynchronous: on a loaded machine the replica may lag by more than
    # this test's whole run, and then a failover loses the trees themselves (a limit
    # docs/scaling.md states; --min-replicas-ack closes it). This test is about what the
    # nodes do across the failover, so the replica first has what the primary has.
    with victim.client() as primary:
        assert primary.wait(1, 10_000) == 1, "the replica did not catch up in 10 s"
    killed_at = time.monotonic()
    setup.kill(victim)

    def down() -> bool:
        try:
            return not store.ping()
        except StoreUnavailableError:
            return True

    assert wait_for(down, timeout=5, what="the health check to see the shard down")
    setup.wait_for_failover(victim, timeout=20)
    promoted = time.monotonic() - killed_at
    wait_for(lambda: _pings(store), timeout=10, what="health ok after the failover")
    (tmp_path / "go2").touch()
    marks = check_final(client, roots, tmp_path)
    print(f"\ncluster: replica promoted {promoted:.1f}s after the kill; {len(on_victim)} "
          f"of {len(roots)} trees on the killed shard; all done "
          f"{time.monotonic() - killed_at:.1f}s after it; {len(marks)} marks, once each")
    assert all(n.running for n in nodes)


def _pings(store: Store) -> bool:
    try:
        return store.ping()
    except StoreUnavailableError:
        return False


def test_min_replicas_ack_runs_nothing_the_replica_lacks(
        sentinel_setup: SentinelSetup, cluster: Cluster, tmp_path: Path) -> None:
    setup = sentinel_setup
    node = cluster.start("a1", setup.url, lease=3.0,
                         extra=["--min-replicas-ack", "1", "--ack-timeout", "0.3"])
    client = Client(setup.url)
    mark = {"kind": "jgc-mark", "node": "a1", "params": {"path": str(tmp_path / "marks")}}
    first = client.submit({**mark, "params": {**mark["params"], "mark": "first"}})
    assert wait_done(client, first)["state"] == "SUCCESS"
    setup.wait_replicated()
    replica = setup.replica.client()
    replica.execute_command("REPLICAOF", HOST, str(free_port()))  # it stops receiving
    second = client.submit({**mark, "params": {**mark["params"], "mark": "second"}})
    # Claimed on the primary, but no replica acknowledges the claim: it does not run.
    wait_for(lambda: "replica(s) acknowledged within" in node.stderr(), timeout=15,
             what="the node to report the missing acknowledgement")
    assert client.job(second)["state"] == "RUNNING"
    assert "second" not in runs(tmp_path / "marks")
    replica.execute_command("REPLICAOF", HOST, str(setup.primary.port))
    assert wait_done(client, second)["state"] == "SUCCESS"
    assert runs(tmp_path / "marks") == {"first": [node.pid], "second": [node.pid]}


class RecordingSource:
    """The store as a pub/sub source, remembering each connection it made."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.made: list[Any] = []

    def pubsub(self, **kwargs: Any) -> Any:
        pubsub = self.store.pubsub(**kwargs)
        self.made.append(pubsub)
        return pubsub


@pytest.mark.parametrize("cluster_setup", [1], indirect=True)
def test_a_listener_whose_cluster_node_dies_subscribes_again(
        cluster_setup: ClusterSetup) -> None:
    """The node holding a listener's subscription is killed: the listener says so
    (down), subscribes through another node (up) and hears what is published next."""
    from jobgrove.messaging.pubsub import Listener

    setup = cluster_setup
    source = RecordingSource(Store(connect(setup.url)))
    events: list[str] = []
    got: list[Any] = []
    channel = "jg:ch:node:n1"
    listener = Listener(source, [channel], lambda _c, m: got.append(m),
                        lambda: events.append("up"), lambda why: events.append("down"))
    listener.start()
    try:
        wait_for(lambda: events == ["up"], timeout=10, what="the listener up")
        victim = setup.node_on(int(source.made[-1].node.port))
        victim.kill()
        wait_for(lambda: "down" in events and events[-1] == "up", timeout=20,
                 what="the listener down, then up through another node")
        assert source.made[-1].node.port != victim.port
        live = next(n for n in setup.nodes if n.alive and n is not victim)

        def heard() -> bool:
            with live.client() as client:
                client.publish(channel, '{"t": "ready"}')
            return bool(got)

        wait_for(heard, timeout=10, what="a message after the node died")
    finally:
        listener.stop()
