"""Real multi-server Redis setups for tests: a Sentinel-managed primary with a replica,
and a Redis Cluster. Every server runs on free ports in a temp dir of its own; close()
kills them all (SIGKILL) and removes the dir.

Readiness is always awaited with deadlines; a setup that does not come up fails with
the tail of the servers' logs. Servers are lean (no RDB, no AOF, diskless replication
without delay) and every timeout is small, so failovers take seconds.
"""

from __future__ import annotations

import subprocess
from typing import Any

import redis

from tests.server_process import HOST, LEAN, ServerProcess, Setup, env_flag, redis_exe

__all__ = ["HOST", "ClusterSetup", "SentinelSetup", "ServerProcess", "Setup", "env_flag"]


def _pairs(flat: Any) -> dict[str, str]:
    """A Redis reply of alternating names and values (SENTINEL MASTER) as a dict."""
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


class SentinelSetup(Setup):
    """A primary, a replica (``--replicaof``) and three sentinels monitoring them as
    ``service`` with quorum 2. ``url`` is the ``redis+sentinel://`` URL of the sentinels.
    ``primary`` and ``replica`` keep their names after a failover: ``current_primary()``
    asks the sentinels who holds the role now."""

    kind = "sentinel"

    def __init__(self, service: str = "jobgrove", *, sentinels: int = 3,
                 down_after_ms: int = 500, failover_timeout_ms: int = 2000) -> None:
        super().__init__()
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.primary = self.add("primary", LEAN)
        self.replica = self.add("replica", LEAN)
        self.sentinels: list[ServerProcess] = []
        self._count = sentinels

    @property
    def url(self) -> str:
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    @property
    def data_servers(self) -> list[ServerProcess]:
        return [self.primary, self.replica]

    def start(self) -> None:
        self.primary.start(new_port_on_clash=True)
        self.replica.args = [*LEAN, "--replicaof", HOST, str(self.primary.port)]
        self.replica.start(new_port_on_clash=True)
        # Sentinels learn the replicas from the primary's INFO, read at once and then
        # only every 10 s: the replica must be attached before they start.
        self.wait(lambda: self.replica.info("replication").get("master_link_status") == "up",
                  15, "the replica to sync", self.data_servers)
        svc = self.service
        for i in range(self._count):
            sentinel = self.add(f"sentinel{i + 1}", sentinel_conf=[])
            sentinel.sentinel_conf = [
                f"sentinel monitor {svc} {HOST} {self.primary.port} 2",
                f"sentinel down-after-milliseconds {svc} {self.down_after_ms}",
                f"sentinel failover-timeout {svc} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {svc} 1",
            ]
            self.sentinels.append(sentinel)
            sentinel.start(new_port_on_clash=True)
        # A failover needs the quorum: every sentinel must know the two others (hello
        # messages every 2 s) and the replica.
        self.wait(self._sentinels_ready, 20, "the sentinels to know each other and the replica")

    def _master_state(self, sentinel: ServerProcess) -> dict[str, str]:
        try:
            with sentinel.client() as client:
                return _pairs(client.execute_command("SENTINEL", "MASTER", self.service))
        except (redis.RedisError, OSError):
            return {}

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            state = self._master_state(sentinel)
            if (state.get("num-other-sentinels") != str(self._count - 1)
                    or state.get("num-slaves") != "1" or state.get("flags") != "master"):
                return False
        return True

    def reported_primaries(self) -> set[int]:
        """The primary port each live sentinel reports."""
        ports = set()
        for sentinel in self.sentinels:
            if not sentinel.alive or sentinel.paused:
                continue
            try:
                with sentinel.client() as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                  self.service)
            except (redis.RedisError, OSError):
                continue
            if addr:
                ports.add(int(addr[1]))
        return ports

    def server_on(self, port: int) -> ServerProcess:
        return next(s for s in self.data_servers if s.port == port)

    def current_primary(self) -> ServerProcess:
        ports = self.reported_primaries()
        assert len(ports) == 1, f"sentinels disagree on the primary: {ports}"
        return self.server_on(ports.pop())

    def wait_replicated(self, timeout: float = 5.0) -> None:
        """Until the current primary's writes so far reached the replica (WAIT)."""
        primary = self.current_primary()
        with primary.client(socket_timeout=timeout + 1) as client:
            acked = client.wait(1, int(timeout * 1000))
        assert acked >= 1, f"the replica did not acknowledge within {timeout}s"

    def wait_for_failover(self, old: ServerProcess, timeout: float = 20.0) -> ServerProcess:
        """Until every live sentinel reports a primary other than ``old`` and that
        server says it is a primary; returns it."""
        def promoted() -> ServerProcess | None:
            ports = self.reported_primaries()
            if len(ports) != 1 or old.port in ports:
                return None
            new = self.server_on(next(iter(ports)))
            return new if new.info("replication").get("role") == "master" else None

        new = self.wait(promoted, timeout, f"a failover away from {old.name}")
        assert new is not None
        return new


class ClusterSetup(Setup):
    """A Redis Cluster of ``primaries`` primaries and ``replicas`` replicas per primary,
    made with ``redis-cli --cluster create``. ``url`` is the ``redis+cluster://`` URL of
    every node (any one of them can start a client)."""

    kind = "cluster"

    def __init__(self, primaries: int = 3, replicas: int = 0, *,
                 node_timeout_ms: int = 1000) -> None:
        super().__init__()
        self.replicas = replicas
        args = [*LEAN, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms)]
        self.nodes = [self.add(f"node{i + 1}", args, cluster_bus=True)
                      for i in range(primaries * (1 + replicas))]
        self._served: dict[int, list[tuple[int, int]]] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start(new_port_on_clash=True)
        create = [redis_exe("redis-cli"), "--cluster", "create",
                  *(n.address for n in self.nodes),
                  "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n{self.logs()}")
        self.wait(self._ready, 30, "cluster_state:ok on every node")

    def cluster_info(self, node: ServerProcess) -> dict[str, str]:
        try:
            with node.client() as client:
                text = client.execute_command("CLUSTER", "INFO")
        except (redis.RedisError, OSError):
            return {}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)

    def _ready(self, nodes: list[ServerProcess] | None = None) -> bool:
        nodes = self.nodes if nodes is None else nodes
        for node in nodes:
            info = self.cluster_info(node)
            if (info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384"
                    or info.get("cluster_known_nodes") != str(len(self.nodes))):
                return False
        topology = self.topology()
        replicas = [n for n in nodes if topology.get(n.port, {}).get("role") == "slave"]
        if len(replicas) != (len(self.nodes) - len(self.primaries(topology))):
            return False
        return all(r.info("replication").get("master_link_status") == "up" for r in replicas)

    def topology(self) -> dict[int, dict[str, Any]]:
        """Port -> {id, role ('master'|'slave'), primary (its primary's id), slots
        [(first, last)], failed}, as the first live node sees it (CLUSTER NODES)."""
        for node in self.nodes:
            if not node.alive or node.paused:
                continue
            try:
                with node.client() as client:
                    text = str(client.execute_command("CLUSTER", "NODES"))
            except (redis.RedisError, OSError):
                continue
            out: dict[int, dict[str, Any]] = {}
            for line in text.splitlines():
                fields = line.split()
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                flags = fields[2].split(",")
                slots = [tuple(int(x) for x in s.split("-")) if "-" in s else (int(s), int(s))
                         for s in fields[8:] if not s.startswith("[")]
                out[port] = {"id": fields[0], "role": "master" if "master" in flags else "slave",
                             "primary": None if fields[3] == "-" else fields[3],
                             "slots": slots, "failed": "fail" in flags or "fail?" in flags}
            return out
        raise AssertionError(f"no cluster node answers\n{self.logs()}")

    def node_on(self, port: int) -> ServerProcess:
        return next(n for n in self.nodes if n.port == port)

    def primaries(self, topology: dict[int, dict[str, Any]] | None = None
                  ) -> list[ServerProcess]:
        """The nodes that serve slots now."""
        topology = self.topology() if topology is None else topology
        return [self.node_on(p) for p, n in sorted(topology.items())
                if n["role"] == "master" and n["slots"] and not n["failed"]]

    def primary_for(self, key: str) -> ServerProcess:
        """The node serving ``key``'s hash slot now."""
        with self.primaries()[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for port, node in self.topology().items():
            if node["role"] == "master" and not node["failed"] and any(
                    a <= slot <= b for a, b in node["slots"]):
                return self.node_on(port)
        raise AssertionError(f"no primary serves slot {slot} of {key!r}")

    def replicas_of(self, primary: ServerProcess) -> list[ServerProcess]:
        topology = self.topology()
        primary_id = topology[primary.port]["id"]
        return [self.node_on(p) for p, n in sorted(topology.items())
                if n["primary"] == primary_id]

    def kill(self, node: ServerProcess) -> None:
        """SIGKILL ``node``, remembering the slots it served (for wait_for_failover)."""
        self._served[node.port] = self.topology()[node.port]["slots"]
        node.kill()

    def wait_for_failover(self, killed: ServerProcess, timeout: float = 20.0
                          ) -> ServerProcess:
        """Until another node serves the slots ``killed`` served when ``kill()`` took
        it down, and every live node says cluster_state:ok; returns that node."""
        slots = self._served.get(killed.port)
        assert slots, f"{killed.name} served no slots when killed (use ClusterSetup.kill)"
        live = [n for n in self.nodes if n.alive and not n.paused]

        def promoted() -> ServerProcess | None:
            topology = self.topology()
            owners = {port for port, n in topology.items()
                      if port != killed.port and n["role"] == "master" and not n["failed"]
                      and any(tuple(s) in n["slots"] for s in slots)}
            if len(owners) != 1:
                return None
            if not all(self.cluster_info(n).get("cluster_state") == "ok" for n in live):
                return None
            return self.node_on(owners.pop())

        new = self.wait(promoted, timeout, f"another node to serve {killed.name}'s slots")
        assert new is not None
        return new
