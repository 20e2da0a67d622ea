"""Ids as people use them: any unique prefix of at least 8 characters stands for a job
id, in the store and the client (both Redis adapters) and on the command line (a real
node process); an ambiguous prefix is an error listing the candidates (exit 2)."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobgrove import Client
from jobgrove.core.spec import parse_spec
from jobgrove.errors import AmbiguousIdError, UnknownJobError
from jobgrove.jobs.api import kind_infos
from jobgrove.jobs.log import log_path
from jobgrove.messaging.store import Store
from tests.cli_helpers import run
from tests.cluster import wait_done

#: Two trees whose roots share their first 24 characters (``abcdef12-3456-4000-8000-``).
TWIN_IDS = ("abcdef12-3456-4000-8000-100000000000", "abcdef12-3456-4000-8000-200000000000")


def submit_with_ids(store: Store, spec: dict[str, Any], ids: list[str]) -> str:
    """Submit through the real store, with chosen job ids (ids are random otherwise)."""
    supply = iter(ids)
    jobs, tags = parse_spec(spec, kind_infos(), new_id=lambda: next(supply))
    return store.submit(jobs, tags)


def test_prefixes_resolve_in_store_and_client(backend: Any) -> None:
    client = Client(backend)
    root = client.submit({"kind": "noop", "node": "n1", "children": [
        {"kind": "noop", "title": "child"}]}, allow_unknown_node=True)
    child = client.status(root)["children"][0]["id"]
    assert client.resolve(root[:8]) == root
    assert client.resolve(child[:8].upper()) == child  # ids are lower case; input need not be
    assert client.resolve(root) == root
    assert client.status(child[:9])["id"] == root
    assert client.job(child[:12])["id"] == child
    assert client.store.resolve_root(child[:10]) == root
    assert client.store.job_state(child[:8]) == "WAITING"
    outcome = client.abort(child[:8])
    assert outcome.state == "ABORTED"
    assert client.job(child)["cause"] == child


def test_ambiguous_and_unknown_prefixes(backend: Any) -> None:
    client = Client(backend)
    spec = {"kind": "noop", "node": "n1"}
    for twin in TWIN_IDS:
        submit_with_ids(client.store, spec, [twin])
    with pytest.raises(AmbiguousIdError) as caught:
        client.resolve("abcdef12")
    assert sorted(caught.value.candidates) == sorted(TWIN_IDS)
    assert all(twin in str(caught.value) for twin in TWIN_IDS)
    # One more character (past the shared part) decides.
    assert client.resolve("abcdef12-3456-4000-8000-2") == TWIN_IDS[1]
    with pytest.raises(UnknownJobError, match="at least 8 characters"):
        client.resolve("abcdef1")  # too short, though it would match
    with pytest.raises(UnknownJobError):
        client.resolve("0123abcd")
    with pytest.raises(UnknownJobError):
        client.resolve("abcdef12*")  # not an id's characters
    full = str(uuid.uuid4())
    with pytest.raises(UnknownJobError):
        client.status(full)


def test_ambiguity_lists_at_most_ten_candidates(redis_url: str) -> None:
    store = Client(redis_url).store
    ids = [f"feedbeef-0000-4000-8000-{n:012d}" for n in range(12)]
    for job_id in ids:
        submit_with_ids(store, {"kind": "noop", "node": "n1"}, [job_id])
    with pytest.raises(AmbiguousIdError) as caught:
        store.resolve_id("feedbeef")
    assert len(caught.value.candidates) == 10
    assert "more than 10" in str(caught.value)


def test_cli_takes_prefixes(cluster: Any, redis_url: str, tmp_path: Path) -> None:
    node = cluster.start("p1", redis_url, listen="127.0.0.1:0")
    client = Client(redis_url)
    root = client.submit({"kind": "noop", "node": "p1", "children": [
        {"kind": "shell", "title": "say", "params": {"command": "echo prefix works"}}]})
    wait_done(client, root)
    child = client.status(root)["children"][0]["id"]
    assert "prefix works" in log_path(node.log_dir, child).read_text()

    shown = run("status", root[:8], "--json", redis=redis_url)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == root

    text = run("status", root[:8], redis=redis_url)
    assert text.returncode == 0 and child[:8] in text.stdout

    logs = run("logs", child[:8], redis=redis_url)
    assert logs.returncode == 0, logs.stderr
    assert "prefix works" in logs.stdout

    running = client.submit({"kind": "jgc-gate", "node": "p1",
                             "params": {"path": str(tmp_path / "never")}})
    aborted = run("abort", running[:8], redis=redis_url)
    assert aborted.returncode == 0, aborted.stderr
    assert running in aborted.stdout  # the full id it resolved to
    assert wait_done(client, running)["state"] == "ABORTED"


def test_cli_ambiguous_prefix_exits_2_listing_candidates(redis_url: str) -> None:
    store = Client(redis_url).store
    for twin in TWIN_IDS:
        submit_with_ids(store, {"kind": "noop", "node": "n1"}, [twin])
    for args in (("status", "abcdef12"), ("abort", "abcdef12-3456"),
                 ("logs", "abcdef12"), ("status", "abcdef12", "--json")):
        result = run(*args, redis=redis_url)
        assert result.returncode == 2, (args, result.stderr)
        assert "ambiguous" in result.stderr
        assert all(twin in result.stderr for twin in TWIN_IDS), result.stderr
        assert "Traceback" not in result.stderr
    result = run("status", TWIN_IDS[0][:25], "--json", redis=redis_url)
    assert result.returncode == 0 and json.loads(result.stdout)["id"] == TWIN_IDS[0]


def test_every_job_of_a_big_tree_is_indexed(redis_url: str) -> None:
    client = Client(redis_url)
    spec = {"kind": "noop", "node": "n1",
            "children": [{"kind": "noop"} for _ in range(4500)]}  # > one index chunk
    root = client.submit(spec, allow_unknown_node=True)
    ids = [j["id"] for j in client.status(root)["children"]]
    assert client.store.client.zcard(client.keys.ids) == len(ids) + 1
    for job_id in itertools.islice(ids, 0, None, 900):
        assert client.resolve(job_id[:13]) == job_id
