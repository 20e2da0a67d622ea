"""Ids as people type them, over the websocket too: ``subscribe``, ``watch``, ``abort``
and ``rerun`` take any unique prefix of at least 8 characters; frames carry full ids;
an ambiguous prefix is a ``bad_request`` that lists the candidates."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect as ws_connect

from jobgrove.cli.logs import stream_log
from tests.ws_helpers import Cluster, cluster_of, recv_json, until


@pytest.fixture
def cluster(redis_url: str, log_dir: str) -> Iterator[Cluster]:
    yield from cluster_of(redis_url, log_dir)


def test_prefixes_work_everywhere_an_id_goes(cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a is not None
    job = cluster.shell("a", "echo hello")
    assert cluster.client.wait(job, timeout=10)["state"] == "SUCCESS"
    ghost = cluster.client.submit({"kind": "noop", "node": "ghost"}, allow_unknown_node=True)
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "job": job[:8], "follow": False}))
        frame = until(ws, "log")
        assert frame["job"] == job and "hello" in frame["data"]
        ws.send(json.dumps({"type": "watch", "tree": ghost[:13]}))
        assert until(ws, "tree")["tree"]["id"] == ghost
        ws.send(json.dumps({"type": "abort", "job": ghost[:8]}))
        aborted = until(ws, "aborted")
        assert aborted["job"] == ghost and aborted["state"] == "ABORTED"
        ws.send(json.dumps({"type": "rerun", "job": ghost[:8]}))
        assert until(ws, "rerun")["tree"] == ghost
        ws.send(json.dumps({"type": "unwatch", "tree": ghost[:8]}))
        ws.send(json.dumps({"type": "subscribe", "job": "abc"}))
        error = until(ws, "error")
        assert error["code"] == "bad_request" and "at least 8 characters" in error["message"]
        ws.send(json.dumps({"type": "subscribe", "job": "0123abcd"}))
        assert until(ws, "error")["code"] == "not_found"
    out = io.StringIO()  # the CLI's reader, given a prefix (frames carry the full id)
    assert stream_log(a.address, job[:8], out=out) == "SUCCESS"
    assert "hello" in out.getvalue()


def test_an_ambiguous_prefix_lists_the_candidates(cluster: Cluster) -> None:
    a = cluster.add("a")
    assert a is not None
    raw = cluster.client.store.client
    # Two ids that share their first 8 characters (written as submit indexes them).
    ids = ["abcdef01-0000-4000-8000-000000000001", "abcdef01-0000-4000-8000-000000000002"]
    raw.zadd(cluster.client.keys.ids, {i: 0 for i in ids})
    with ws_connect(f"ws://{a.address}/ws") as ws:
        ws.send(json.dumps({"type": "watch", "tree": "abcdef01"}))
        error = recv_json(ws)
        assert error["type"] == "error" and error["code"] == "bad_request", error
        assert "ambiguous" in error["message"] and all(i in error["message"] for i in ids)
