"""Wire format and auth units, and the endpoint's health and threads."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import wsproto.frame_protocol as fp

from jobgrove.endpoint import wire
from jobgrove.endpoint.auth import (
    AuthError,
    is_loopback_host,
    mint_token,
    origin_allowed,
    split_host,
    verify_token,
)
from tests.helpers import wait_for
from tests.ws_helpers import UUID, Cluster, cluster_of


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


# -- unit tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, code", [
    ("{", "bad_request"),
    ("[1]", "bad_request"),
    ('{"job": "x"}', "bad_request"),
    ('{"type": "explode"}', "bad_request"),
    ('{"type": "subscribe"}', "bad_request"),
    ('{"type": "subscribe", "job": "../../etc/passwd"}', "bad_request"),
    ('{"type": "subscribe", "job": "/etc/passwd"}', "bad_request"),
    ('{"type": "subscribe", "job": "39d4f79d-2196-4d80-9cf8-fe18c4c2761\\u0000"}',
     "bad_request"),
    (f'{{"type": "subscribe", "job": "{UUID}", "offset": -1}}', "bad_request"),
    (f'{{"type": "subscribe", "job": "{UUID}", "offset": true}}', "bad_request"),
    (f'{{"type": "subscribe", "job": "{UUID}", "offset": "5"}}', "bad_request"),
    ('{"type": "watch", "tree": 5}', "bad_request"),
    (json.dumps({"type": "subscribe", "job": UUID, "pad": "x" * 5000}), "too_large"),
])
def test_bad_requests_are_named(raw: str, code: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.parse_request(raw)
    assert info.value.code == code
    frame = json.loads(info.value.frame()[2:] if info.value.frame()[1] < 126
                       else info.value.frame()[4:])
    assert frame["type"] == "error" and frame["code"] == code and frame["message"]


def test_good_requests() -> None:
    assert wire.parse_request(json.dumps({"type": "subscribe", "job": UUID, "offset": 7})) \
        == wire.Subscribe(UUID, 7, True)
    assert wire.parse_request(json.dumps({"type": "watch", "tree": UUID})) == wire.Watch(UUID)
    with pytest.raises(wire.WireError):
        wire.parse_request(b'{"type":"watch"}')


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200000])
def test_frames_decode_with_an_independent_parser(size: int) -> None:
    payload = json.dumps({"type": "log", "data": "x" * size}).encode()
    proto = fp.FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(wire.ws_frame(payload))
    frames = list(proto.received_frames())
    assert len(frames) == 1 and frames[0].payload == payload.decode()


def test_utf8_cut_and_decode() -> None:
    text = "é€😀".encode()
    for n in range(len(text) + 1):
        cut = wire.utf8_cut(text[:n])
        text[:cut].decode("utf-8")  # never splits a character
        assert n - cut < 4
    assert len(wire.decode_log(b"ok \xff\xfe!").encode()) == 6


def test_tokens() -> None:
    secret = b"s" * 32
    token = mint_token(secret, 60)
    assert verify_token(secret, token) == "viewer"
    assert verify_token(secret, mint_token(secret, 60, subject="node")) == "node"
    for bad in (None, "", "garbage", token[:-2] + "xx", mint_token(b"t" * 32, 60),
                mint_token(secret, 10, now=0)):
        with pytest.raises(AuthError):
            verify_token(secret, bad)


def test_origins_and_hosts() -> None:
    assert origin_allowed(None, "h:1", [])
    assert origin_allowed("http://h:1", "h:1", [])
    assert not origin_allowed("http://evil:1", "h:1", [])
    assert not origin_allowed("null", "h:1", [])
    assert origin_allowed("https://ui.example", "h:1", ["https://ui.example"])
    assert split_host("[::1]:80") == "::1" and split_host("a:1") == "a"
    assert is_loopback_host("127.0.0.5") and is_loopback_host("localhost")
    assert not is_loopback_host("example.com") and not is_loopback_host("10.0.0.1")


def test_endpoint_health_and_stop_leaves_no_threads(cluster: Cluster) -> None:
    import threading
    import urllib.request

    ep = cluster.add("a")
    assert ep is not None
    with urllib.request.urlopen(f"http://{ep.address}/health", timeout=5) as res:
        assert json.load(res) == {"node": "a", "redis": "ok", "running": 0}
    names = ("jg-http-a", "jg-pubsub-a", "jg-lookups-a")
    assert any(t.name.startswith(names) for t in threading.enumerate())
    ep.stop()
    wait_for(lambda: not any(t.name.startswith(names) for t in threading.enumerate()),
             timeout=5, what="endpoint threads to end")
    host, port = ep.address.rsplit(":", 1)
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1)
