"""Hostile clients on a real node endpoint: slowloris (trickled headers and idle
connections) while /health is probed and jobs run, the per-address cap, the total
deadlines of the request head and the websocket handshake."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from jobgrove.endpoint.http import Limits
from tests.helpers import wait_for
from tests.slowloris import Slowloris, get_health, probe_health
from tests.ws_helpers import Cluster, cluster_of

HEAD_DEADLINE = 1.0


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def raw(address: str, data: bytes, source: str = "127.0.0.1",
        timeout: float = 5.0) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.parametrize("mode", ["trickle", "idle"])
def test_slowloris_leaves_health_answerable_and_jobs_running(
        cluster: Cluster, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    # One address may fill the whole table here (no per-address cap), the hardest case:
    # every slot is held, so /health must come through the overflow desk's reserve.
    limits = Limits(header_timeout=HEAD_DEADLINE, max_per_address=10_000)
    ep = cluster.add("a", limits=limits)
    assert ep is not None and ep.server is not None
    server = ep.server
    # A line every 0.3 s: a per-read timeout of 1 s would never fire.
    with Slowloris(ep.address, 300, mode, interval=0.3) as attack:
        wait_for(lambda: len(server._threads) >= limits.max_connections, timeout=10,
                 what="the attack to fill the connection table")
        tree = cluster.client.submit({"kind": "noop", "node": "a", "children": [
            {"kind": "shell", "params": {"command": ["echo", "hi"]}},
            {"kind": "sleep", "params": {"seconds": 0.2}}]})
        availability = probe_health(ep.address, duration=3 * HEAD_DEADLINE,
                                    timeout=HEAD_DEADLINE)
        assert cluster.client.wait(tree, timeout=10)["state"] == "SUCCESS"
        held_table = server.refused
        cut = attack.refused
    with capsys.disabled():
        print(f"\n  slowloris {mode}, 300 connections, head deadline {HEAD_DEADLINE:g} s: "
              f"/health {availability}")
    assert availability.failures == 0, availability
    assert availability.slowest < HEAD_DEADLINE
    assert held_table > 0  # connections did find the table full
    # Every slot holder was cut at the head deadline, not kept alive by its trickle.
    assert cut >= limits.max_connections, cut


def test_per_address_cap(cluster: Cluster) -> None:
    ep = cluster.add("a", limits=Limits(max_per_address=4))
    assert ep is not None and ep.server is not None
    host, port = ep.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(4)]
    try:
        wait_for(lambda: ep.server is not None and ep.server._pending.get("127.0.0.1") == 4,
                 what="4 connections still sending their head")
        request = b"GET /api/trees HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        status, body = status_and_body(raw(ep.address, request))
        assert status == 503 and body["type"] == "error" and body["code"] == "unavailable"
        assert "too many connections from 127.0.0.1" in str(body["message"])
        assert "limit 4" in str(body["message"])
        # /health is still answered to that address; other addresses are served.
        assert get_health(ep.address, timeout=2)[0] == 200
        assert status_and_body(raw(ep.address, request, source="127.0.0.2"))[0] == 200
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: ep.server is not None and not ep.server._pending,
             what="the idle connections to be gone")
    assert status_and_body(raw(ep.address, request))[0] == 200


def test_health_answered_when_the_table_is_full(cluster: Cluster) -> None:
    ep = cluster.add("a", limits=Limits(max_connections=3))
    assert ep is not None and ep.server is not None
    host, port = ep.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
    try:
        wait_for(lambda: ep.server is not None and len(ep.server._threads) == 3,
                 what="3 connections holding the table")
        status, body = get_health(ep.address, timeout=2)
        assert status == 200 and body is not None and body["node"] == "a"
        assert body["running"] == 0  # the node's own answer, not a canned one
        answer = raw(ep.address, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, body = status_and_body(answer)
        assert status == 503 and body["message"] == "too many connections (limit 3)"
        assert ep.server.desk.reserved_answers == 1
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("request_head", [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
], ids=["http", "websocket"])
def test_head_deadline_is_a_total(cluster: Cluster, request_head: bytes) -> None:
    ep = cluster.add("a", limits=Limits(header_timeout=HEAD_DEADLINE,
                                        handshake_timeout=HEAD_DEADLINE))
    assert ep is not None
    host, port = ep.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(request_head)
        sock.settimeout(0.2)
        answer, line = b"", 0
        while not answer and time.monotonic() - start < 5:
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                line += 1  # a header line every 0.2 s, never the blank line
                sock.sendall(f"X-Trickle-{line}: x\r\n".encode())
        took = time.monotonic() - start
        sock.settimeout(5)
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert "not complete within" in json.loads(answer.partition(b"\r\n\r\n")[2])["message"]
    assert HEAD_DEADLINE - 0.05 <= took < HEAD_DEADLINE + 0.5, took
