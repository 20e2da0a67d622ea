"""Helpers of the websocket tests: an in-process cluster of nodes with an Endpoint each
(on the test session's private redis-server), and frame readers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from jobgrove import Client, Node
from jobgrove.endpoint.app import Endpoint
from jobgrove.messaging.connection import connect
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.store import Store

UUID = "39d4f79d-2196-4d80-9cf8-fe18c4c27618"


class Cluster:
    """In-process nodes, each with its endpoint registered as the node's address."""

    def __init__(self, redis_url: str, log_dir: str) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.client = Client(redis_url)
        self.endpoints: dict[str, Endpoint] = {}
        self.nodes: dict[str, Node] = {}

    def add(self, name: str, *, endpoint: bool = True, address: str | None = None,
            **kwargs: Any) -> Endpoint | None:
        logs = f"{self.log_dir}/{name}"
        ep = None
        if endpoint:
            redis = connect(self.redis_url)
            kwargs.setdefault("listen", "127.0.0.1:0")
            ep = Endpoint(node_name=name, store=Store(redis), registry=Registry(redis),
                          log_dir=logs, **kwargs)
            ep.start()
            self.endpoints[name] = ep
            address = ep.address
        node = Node(name, redis=self.redis_url, log_dir=logs, abort_grace=3.0,
                    address=address, on_log_growth=ep.on_log_growth if ep else None)
        if ep is not None:
            ep.running_count = lambda: node.running(timeout=1.0)
        self.nodes[name] = node.start()
        return ep

    def shell(self, node: str, script: str, **spec: Any) -> str:
        return self.client.submit({"kind": "shell", "node": node,
                                   "params": {"command": ["sh", "-c", script]}, **spec})

    def log_bytes(self, node: str, job: str) -> bytes:
        from jobgrove.jobs.log import log_path

        return log_path(f"{self.log_dir}/{node}", job).read_bytes()

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop(graceful=False)
        for ep in self.endpoints.values():
            ep.stop()


def cluster_of(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    """Body of each websocket test module's ``cluster`` fixture."""
    c = Cluster(redis_url, log_dir)
    yield c
    c.close()


def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def until(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    """Frames until one of type ``kind`` (returned)."""
    while True:
        frame = recv_json(ws, timeout)
        if frame["type"] == kind:
            return frame
