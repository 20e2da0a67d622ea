"""Security of the node endpoint: tokens, Origin, loopback-only without a secret."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from jobgrove.cli.logs import stream_log
from jobgrove.endpoint.auth import mint_token
from jobgrove.endpoint.client import WsError
from tests.ws_helpers import UUID, Cluster, cluster_of, recv_json


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


SECRET = b"0123456789abcdef0123456789abcdef"


def refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(url, open_timeout=5, **kwargs)  # type: ignore[arg-type]
    return info.value.response.status_code


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=5) as res:
            return int(res.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tokens_and_origin_are_checked_before_the_upgrade(cluster: Cluster) -> None:
    a = cluster.add("a", secret=SECRET, allowed_origins=["https://ops.example"])
    url = f"ws://{a.address}/ws"
    good = mint_token(SECRET, 60)
    assert refused(url) == 401
    assert refused(url, additional_headers={"Authorization": "Bearer nonsense"}) == 401
    assert refused(url + "?token=" + mint_token(b"another-secret-of-16+", 60)) == 401
    assert refused(url + "?token=" + mint_token(SECRET, 5, now=0)) == 401  # expired
    assert refused(url + "?token=" + good, origin="http://evil.example") == 403
    for ok in ({"additional_headers": {"Authorization": f"Bearer {good}"}},
               {"origin": "https://ops.example"}, {}):
        with ws_connect(url + "?token=" + good, **ok) as ws:  # type: ignore[arg-type]
            ws.send(json.dumps({"type": "subscribe", "job": UUID}))
            assert recv_json(ws)["code"] == "not_found"


def test_every_http_request_needs_a_token(cluster: Cluster) -> None:
    a = cluster.add("a", secret=SECRET)
    base = f"http://{a.address}"
    token = mint_token(SECRET, 60)
    for path in ("/health", "/", "/app.js", "/api/trees", "/nope"):
        assert http_status(base + path) == 401
    assert http_status(base + "/health", {"Authorization": f"Bearer {token}"}) == 200
    # The page is opened with ?token=; its own assets then ride on the cookie it sets.
    with urllib.request.urlopen(f"{base}/?token={token}", timeout=5) as res:
        cookie = res.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert http_status(base + "/app.js", {"Cookie": cookie.split(";")[0]}) == 200


def test_relay_between_nodes_with_a_secret(cluster: Cluster) -> None:
    a = cluster.add("a", secret=SECRET)
    cluster.add("b", secret=SECRET)
    job = cluster.shell("b", "echo relayed through a")
    cluster.client.wait(job, timeout=10)
    import io

    out = io.StringIO()
    assert stream_log(a.address, job, follow=True, out=out,
                      token=mint_token(SECRET, 60)) == "SUCCESS"
    assert "relayed through a" in out.getvalue()
    with pytest.raises(WsError) as info:
        stream_log(a.address, job, out=io.StringIO())
    assert info.value.code == "unauthorized"


def test_without_a_secret_only_loopback(cluster: Cluster,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="jobgrove.endpoint"):
        a = cluster.add("a", listen="0.0.0.0:0")
    assert a is not None and a.address.startswith("127.0.0.1:")
    assert "loopback" in caplog.text
    port = a.address.rsplit(":", 1)[1]
    # A page on another site that rebinds its name to 127.0.0.1 is still refused.
    assert http_status(f"http://{a.address}/health", {"Host": f"evil.example:{port}"}) == 403
    assert refused(f"ws://{a.address}/ws", origin="http://evil.example") == 403
    with ws_connect(f"ws://{a.address}/ws", origin=f"http://127.0.0.1:{port}"):
        pass
