"""Bad input on the node endpoint: each gets an error frame, an HTTP error or a clean
close, and the server keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from jobgrove.endpoint.http import Limits
from tests.ws_helpers import UUID, Cluster, cluster_of, recv_json, until


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


BAD = [
    ("not json", "bad_request"),
    ("[]", "bad_request"),
    ('{"type": "teleport"}', "bad_request"),
    (json.dumps({"job": UUID}), "bad_request"),
    ('{"type": "subscribe"}', "bad_request"),
    ('{"type": "subscribe", "job": "../../../etc/passwd"}', "bad_request"),
    ('{"type": "subscribe", "job": "/etc/passwd"}', "bad_request"),
    (json.dumps({"type": "subscribe", "job": f"{UUID}/../x"}), "bad_request"),
    ('{"type": "subscribe", "job": "abc\\u0000def"}', "bad_request"),
    (json.dumps({"type": "subscribe", "job": UUID, "offset": -5}), "bad_request"),
    ('{"type": "watch", "tree": "../x"}', "bad_request"),
    (json.dumps({"type": "watch", "tree": UUID}), "not_found"),
    (json.dumps({"type": "subscribe", "job": UUID}), "not_found"),
    (json.dumps({"type": "subscribe", "job": UUID, "pad": "x" * 10_000}), "too_large"),
]


def raw_http(address: str, data: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_bad_messages_get_error_frames_and_the_connection_stays_usable(
        cluster: Cluster) -> None:
    a = cluster.add("a")
    job = cluster.client.submit({"kind": "noop", "node": "a"})
    cluster.client.wait(job, timeout=10)
    with ws_connect(f"ws://{a.address}/ws") as ws:
        for raw, code in BAD:
            ws.send(raw)
            frame = recv_json(ws)
            assert frame["type"] == "error" and frame["code"] == code, (raw, frame)
            assert len(frame["message"]) < 300
        ws.send(b"\x00binary")
        assert recv_json(ws)["code"] == "bad_request"
        ws.send(json.dumps({"type": "subscribe", "job": job}))
        assert until(ws, "end")["state"] == "SUCCESS"


def test_oversize_message_closes_cleanly_and_others_are_unaffected(cluster: Cluster) -> None:
    a = cluster.add("a")
    with ws_connect(f"ws://{a.address}/ws") as other, \
            ws_connect(f"ws://{a.address}/ws", max_size=None) as big:
        big.send("x" * 200_000)
        with pytest.raises(ConnectionClosed) as info:
            big.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        other.send(json.dumps({"type": "watch", "tree": UUID}))
        assert recv_json(other)["code"] == "not_found"


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"426"),
    (b"POST /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc", b"405"),
    (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\nabc", b"413"),
    (b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n",
     b"431"),
    (b"BLAH\r\n\r\n", b"400"),
    (b"GET /../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"404"),
    (b"GET /web/../endpoint.py HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"404"),
    (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
     b"Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n\r\n", b"400"),
    (b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", b"400"),
    (b"GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n", b"403"),
])
def test_bad_http_requests(cluster: Cluster, request_bytes: bytes, status: bytes) -> None:
    a = cluster.add("a")
    answer = raw_http(a.address, request_bytes)
    assert answer.split(b" ")[1] == status, answer[:200]
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body)["type"] == "error"
    with urllib.request.urlopen(f"http://{a.address}/health", timeout=5) as res:
        assert json.load(res)["node"] == "a"


def test_connection_cap(cluster: Cluster) -> None:
    a = cluster.add("a", limits=Limits(max_connections=3))
    url = f"ws://{a.address}/ws"
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    with ws_connect(url), ws_connect(url), ws_connect(url):
        # (A raw request: the websockets client trips over its own assertion when a
        # refused handshake is closed quickly.)
        answer = raw_http(a.address, upgrade)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
    with ws_connect(url) as ws:  # capacity is back once they closed
        ws.send(json.dumps({"type": "watch", "tree": UUID}))
        assert recv_json(ws)["code"] == "not_found"


def test_static_pages_and_api(cluster: Cluster) -> None:
    a = cluster.add("a")
    cluster.client.submit({"kind": "noop", "node": "a", "tags": {"workspace": "w1"}})
    cluster.client.submit({"kind": "noop", "node": "a", "tags": {"workspace": "w2"}})
    base = f"http://{a.address}"
    for path, kind in (("/", "text/html"), ("/app.js", "javascript"), ("/style.css", "css")):
        with urllib.request.urlopen(base + path, timeout=5) as res:
            assert kind in res.headers["Content-Type"] and res.read()
    with urllib.request.urlopen(base + "/api/trees?workspace=w1", timeout=5) as res:
        trees = json.load(res)["trees"]
    assert [t["tags"] for t in trees] == [{"workspace": "w1"}]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/api/trees?limit=abc", timeout=5)
    assert info.value.code == 400


@pytest.mark.parametrize("query, needle", [
    ("limit=-1", "limit must be an integer from 1 to 10000, got '-1'"),
    ("limit=0", "limit must be an integer from 1 to 10000"),
    ("limit=999999999", "limit must be an integer from 1 to 10000, got '999999999'"),
    ("limit=abc", "limit must be an integer from 1 to 10000, got 'abc'"),
    ("limit=", "limit must be an integer"),
    ("limit=%C2%B2", "limit must be an integer"),
    ("colour=red", "unknown query parameter 'colour' (allowed: workspace, application"),
    ("workspace=a%00b", "workspace must be 1 to 200 printable characters"),
    ("version=" + "v" * 201, "version must be 1 to 200 printable characters"),
    ("cursor=garbage", "invalid cursor 'garbage'"),
    (f"cursor=1.5:{UUID[:-1]}", "invalid cursor"),
    (f"cursor=nan:{UUID}", "invalid cursor"),
])
def test_api_trees_rejects_bad_query_parameters(cluster: Cluster, query: str,
                                                needle: str) -> None:
    a = cluster.add("a")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{a.address}/api/trees?{query}", timeout=5)
    assert info.value.code == 400
    body = json.load(info.value)
    assert body["type"] == "error" and body["code"] == "bad_request"
    assert needle in body["message"], body["message"]


def test_api_trees_accepts_the_viewers_queries(cluster: Cluster) -> None:
    a = cluster.add("a")
    for i in range(3):
        cluster.client.submit({"kind": "noop", "node": "a", "tags": {"workspace": "w"},
                               "title": f"t{i}"})
    base = f"http://{a.address}/api/trees"
    with urllib.request.urlopen(f"{base}?workspace=w&application=&limit=2",
                                timeout=5) as res:
        page = json.load(res)
    assert [t["title"] for t in page["trees"]] == ["t2", "t1"]
    with urllib.request.urlopen(f"{base}?workspace=w&limit=10000&cursor={page['next']}",
                                timeout=5) as res:
        assert [t["title"] for t in json.load(res)["trees"]] == ["t0"]
