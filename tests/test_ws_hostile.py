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
        # Full now, or already turned someone away (on a loaded machine the idle
        # connections may time out before the last ones arrive: the table was full).
        wait_for(lambda: len(server._threads) >= limits.max_connections
                 or server.refused > 0, timeout=20,
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
    ep = cluster.add("a", limits=Limits(max_per_address=4, overflow_timeout=0.5))
    assert ep is not None and ep.server is not None
    server = ep.server
    host, port = ep.address.rsplit(":", 1)
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(5)]
    try:
        wait_for(lambda: server._pending.get("127.0.0.1") == 4 and len(server.desk) == 1,
                 what="4 connections still sending their head, the 5th without a slot")
        # The 5th is refused once its time to send a head is over.
        answer = b""
        while chunk := idle[4].recv(65536):
            answer += chunk
        status, body = status_and_body(answer)
        assert status == 503 and body["type"] == "error" and body["code"] == "unavailable"
        assert body["message"] == ("too many connections from 127.0.0.1 still sending "
                                   "their request (limit 4)")
        # Complete requests from that address are still served: the cap only stops it
        # holding slots with heads it does not finish.
        request = b"GET /api/trees HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        assert status_and_body(raw(ep.address, request))[0] == 200
        assert get_health(ep.address, timeout=2)[0] == 200
        # Another address gets a slot of its own.
        with socket.create_connection((host, int(port)), timeout=5,
                                      source_address=("127.0.0.2", 0)):
            wait_for(lambda: server._pending.get("127.0.0.2") == 1,
                     what="a slot for 127.0.0.2")
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: not server._pending, what="the idle connections to be gone")


def test_a_burst_of_complete_requests_from_one_address_is_served(cluster: Cluster) -> None:
    ep = cluster.add("a", limits=Limits(max_per_address=2))
    assert ep is not None and ep.server is not None
    server = ep.server
    host, port = ep.address.rsplit(":", 1)
    socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(20)]
    try:
        wait_for(lambda: len(server.desk) == 18, what="18 connections over the cap")
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                         if sock is socks[0] else
                         b"GET /api/trees HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for sock in socks:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            assert status_and_body(answer)[0] == 200, answer[:200]
    finally:
        for sock in socks:
            sock.close()


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
