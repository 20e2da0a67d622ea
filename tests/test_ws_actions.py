"""Actions over the websocket (what the viewer's buttons send): ``abort`` acts like
``jobgrove abort``; ``rerun`` as ``jobgrove rerun``; both need the same
credentials as the page; and the JSON API the viewer lists trees and nodes with."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from jobgrove.endpoint.auth import mint_token
from tests.cluster import wait_done
from tests.ws_helpers import UUID, Cluster, cluster_of, recv_json, until

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def test_abort_over_the_websocket(cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a is not None
    root = cluster.client.submit({"kind": "noop", "node": "a", "children": [
        {"kind": "sleep", "params": {"seconds": 60}}]})
    child = cluster.client.status(root)["children"][0]["id"]
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "abort", "job": child}))
        answer = until(ws, "aborted")
        # A running job is asked to stop (it ends ABORTED soon); a waiting one is at once.
        assert answer.pop("state") in ("RUNNING", "ABORTED")
        assert answer == {"type": "aborted", "job": child, "verdict": "ok"}
        status = wait_done(cluster.client, root)
        assert status["state"] == "ABORTED" and status["cause"] == child
        ws.send(json.dumps({"type": "abort", "job": child}))
        assert recv_json(ws)["verdict"] == "finished"
        ws.send(json.dumps({"type": "abort", "job": UUID}))
        assert recv_json(ws) == {"type": "error", "code": "not_found", "job": UUID,
                                 "message": f"unknown job id '{UUID}'"}
        ws.send(json.dumps({"type": "abort", "job": child[:8]}))  # a prefix stands for it
        assert recv_json(ws) == {"type": "aborted", "job": child, "verdict": "finished",
                                 "state": "ABORTED"}
        ws.send(json.dumps({"type": "rerun", "job": root}))
        assert recv_json(ws) == {"type": "rerun", "tree": root, "run": 2}
        ws.send(json.dumps({"type": "rerun", "job": root}))  # it is not done now
        frame = recv_json(ws)
        assert frame["code"] == "bad_request" and "cannot rerun" in frame["message"]
        ws.send(json.dumps({"type": "subscribe", "job": UUID}))  # still usable
        assert recv_json(ws)["code"] == "not_found"


def test_actions_need_the_pages_credentials(cluster: Cluster) -> None:
    a = cluster.add("a", secret=SECRET)
    assert a is not None
    root = cluster.client.submit({"kind": "sleep", "node": "a", "params": {"seconds": 60}})
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://{a.address}/ws", open_timeout=5)
    assert refused.value.response.status_code == 401
    assert cluster.client.job(root)["state"] in ("WAITING", "RUNNING")
    token = mint_token(SECRET, 60)
    with ws_connect(f"ws://{a.address}/ws?token={token}") as ws:
        ws.send(json.dumps({"type": "abort", "job": root}))
        assert until(ws, "aborted")["verdict"] == "ok"
    assert wait_done(cluster.client, root)["state"] == "ABORTED"


def test_json_api_for_the_viewer(cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a is not None
    done = cluster.client.submit({"kind": "noop", "node": "a", "tags": {"workspace": "w"}})
    wait_done(cluster.client, done)
    stuck = cluster.client.submit({"kind": "noop", "node": "ghost"}, allow_unknown_node=True)

    def get(path: str) -> object:
        with urllib.request.urlopen(f"http://{a.address}{path}", timeout=5) as res:
            return json.load(res)

    try:
        get("/api/nodes?bogus=1")
        raise AssertionError("an unknown query parameter was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and "bogus" in exc.read().decode()
    nodes = get("/api/nodes")
    assert nodes == [{"name": "a", "state": "up", "address": a.address}]
    trees = {t["id"]: t for t in get("/api/trees")["trees"]}  # type: ignore[index]
    assert trees[done]["tree_state"] == "SUCCESS" and trees[done]["counts"]["total"] == 1
    assert trees[stuck]["waiting_for"] == {"ghost": "not registered"}
    only = get("/api/trees?state=waiting&runs_on=ghost")["trees"]  # type: ignore[index]
    assert [t["id"] for t in only] == [stuck]
