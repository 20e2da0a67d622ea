"""200 concurrent viewers on one node plus one that never reads: everyone else gets
every byte, the stalled one is dropped, and the server's threads stay bounded."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from jobgrove.endpoint.connection import TOO_SLOW, Connection
from jobgrove.endpoint.http import Limits, Request
from tests.helpers import wait_for
from tests.ws_helpers import Cluster, cluster_of, recv_json


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


VIEWERS = 200
# ~230 KB of log in 400 lines, written over about a second.
PRODUCER = ("import sys, time\n"
            "for i in range(400):\n"
            "    print('L%04d ' % i + 'x' * 560, flush=True)\n"
            "    time.sleep(0.002)\n")


def masked_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def stalled_viewer(address: str, job: str) -> socket.socket:
    """A raw websocket client that subscribes, then never reads another byte."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(masked_frame(json.dumps({"type": "subscribe", "job": job})))
    return sock


def test_200_viewers_and_a_stalled_one(cluster: Cluster) -> None:
    limits = Limits(max_connections=VIEWERS + 20, queue_high=64 * 1024,
                    queue_bytes=256 * 1024, send_timeout=2.0, send_buffer=32 * 1024)
    a = cluster.add("a", limits=limits)
    assert a is not None and a.server is not None
    spec = {"kind": "shell", "node": "a", "params": {"command": ["python3", "-c", PRODUCER]},
            "children": [{"kind": "sleep", "params": {"seconds": 0.3}}]}
    job = cluster.client.submit(spec)
    stalled = stalled_viewer(a.address, job)
    viewers: list[Any] = []
    with contextlib.ExitStack() as stack:
        stack.callback(stalled.close)
        for _ in range(VIEWERS):
            ws = stack.enter_context(
                ws_connect(f"ws://{a.address}/ws", max_queue=None, open_timeout=20))
            ws.send(json.dumps({"type": "subscribe", "job": job, "offset": 0}))
            viewers.append(ws)
        server = a.server
        peak = server.thread_count()
        # The accept and /health reserve threads, then per websocket a writer and
        # simple-websocket's reader.
        assert peak <= 2 + 2 * (VIEWERS + 1)
        results = []
        for ws in viewers:
            data, offset = bytearray(), 0
            while True:
                frame = recv_json(ws, timeout=30)
                if frame["type"] == "log":
                    assert frame["offset"] == offset
                    chunk = frame["data"].encode()
                    data += chunk
                    offset += len(chunk)
                elif frame["type"] == "end":
                    break
            results.append((bytes(data), frame))
        full = cluster.log_bytes("a", job)
        assert b"L0399" in full and len(full) > 200_000
        for data, end in results:
            assert data == full and end["offset"] == len(full) and end["state"] == "SUCCESS"
        wait_for(lambda: server.dropped == 1, timeout=15, what="stalled viewer dropped")
        assert server.thread_count() <= peak
    wait_for(lambda: a.server is not None and a.server.thread_count() == 2, timeout=10,
             what="connection threads to end")


def test_push_past_the_queue_cap_drops_the_viewer() -> None:
    left, right = socket.socketpair()
    try:
        conn = Connection(1, left, Request("GET", "/ws", {}, {}, "peer"),
                          Limits(queue_bytes=100, queue_high=50))
        assert conn.push(b"x" * 60)
        assert conn.room() < 0
        assert not conn.push(b"x" * 60)
        assert conn.closed and conn._close_req is not None
        assert conn._close_req[0] == TOO_SLOW
    finally:
        left.close()
        right.close()


def test_frame_header_sizes() -> None:
    frame = masked_frame("hi")
    assert struct.unpack("!BB", frame[:2]) == (0x81, 0x82)
