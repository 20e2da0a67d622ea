"""Tag queries against a real redis-server and fakeredis: one tag, combinations, newest
first, limit and paging, and a cost that follows the result size, not the store size."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import pytest

from jobgrove import Client, JobgroveError
from jobgrove.messaging.listing import list_trees
from jobgrove.messaging.store import Store
from tests.store_helpers import make_store


# -- tag listing ---------------------------------------------------------------------------
def submit_tagged(client: Client, count: int) -> list[tuple[str, dict[str, str]]]:
    """``count`` trees with varied tags, oldest first."""
    out = []
    for i in range(count):
        tags = {"workspace": ["acme", "beta"][i % 2],
                "application": ["shop", "blog", "wiki"][i % 3],
                "version": str(i % 4), "instance": f"i-{i}", "node": "n1"}
        root = client.submit({"kind": "noop", "node": "n1", "title": f"t{i}", "tags": tags},
                             allow_unknown_node=True)
        out.append((root, tags))
    return out


def expected_ids(trees: list[tuple[str, dict[str, str]]], **want: str) -> list[str]:
    return [root for root, tags in reversed(trees)
            if all(tags[k] == v for k, v in want.items())]


def test_list_by_tags_newest_first(backend: Any) -> None:
    client = Client(backend)
    trees = submit_tagged(client, 24)
    queries: list[dict[str, str]] = [
        {}, {"workspace": "acme"}, {"application": "blog"}, {"version": "3"},
        {"instance": "i-7"}, {"node": "n1"},
        {"workspace": "acme", "application": "shop"},
        {"workspace": "beta", "application": "wiki", "version": "1"},
        {"workspace": "acme", "version": "1"},  # acme is even i, version 1 is odd i: none
        {"workspace": "acme", "application": "shop", "version": "0", "instance": "i-12",
         "node": "n1"},
        {"workspace": "nobody"},
    ]
    for query in queries:
        page = client.list(**query, limit=100)
        ids = [t["id"] for t in page.trees]
        assert ids == expected_ids(trees, **query), query
        assert page.next_cursor is None
        for tree in page.trees:
            assert "children" not in tree
            assert tree["id"] == tree["root"] and tree["parent"] is None
            assert all(tree["tags"][k] == v for k, v in query.items())
        created = [t["created"] for t in page.trees]
        assert created == sorted(created, reverse=True)
    assert client.list(workspace="acme", application="shop", limit=100).trees[0]["title"] \
        == "t18"


def test_list_limit_and_paging(backend: Any) -> None:
    client = Client(backend)
    trees = submit_tagged(client, 23)
    for query, limit in [({}, 5), ({}, 1), ({"workspace": "beta"}, 4),
                         ({"workspace": "acme", "application": "blog"}, 2),
                         ({"application": "shop"}, 8), ({"version": "2"}, 100)]:
        expected = expected_ids(trees, **query)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = client.list(**query, limit=limit, cursor=cursor)
            pages += 1
            assert len(page.trees) <= limit
            seen.extend(t["id"] for t in page.trees)
            if page.next_cursor is None:
                break
            assert len(page.trees) == limit
            cursor = page.next_cursor
            assert pages <= len(expected) + 1
        assert seen == expected, (query, limit)
        assert pages == len(expected) // limit + 1


def index_trees(store: Store, entries: list[tuple[str, float, dict[str, str]]],
                statuses: list[str]) -> None:
    """Index entries straight into Redis (no submit), with the minimal records that
    a listed tree's status needs, for the roots in ``statuses`` only."""
    pipe = store.client.pipeline(transaction=False)
    k = store.keys
    for start in range(0, len(entries), 10_000):
        chunk = entries[start:start + 10_000]
        pipe.zadd(k.trees, {root: score for root, score, _ in chunk})
        by_tag: dict[str, dict[str, float]] = {}
        for root, score, tags in chunk:
            for key, value in tags.items():
                by_tag.setdefault(k.tag(key, value), {})[root] = score
        for key, mapping in by_tag.items():
            pipe.zadd(key, mapping)
    pipe.execute()
    info = {root: (score, tags) for root, score, tags in entries}
    for root in statuses:
        score, tags = info[root]
        pipe.hset(k.roots, root, root)
        pipe.hset(k.tree_key(root, "state"), root, "SUCCESS")
        pipe.hset(k.tree_key(root, "spec"), root, json.dumps({"kind": "noop", "title": "t"}))
        pipe.hset(k.tree_key(root, "meta"), mapping={"created": repr(score),
                                                     "tags": json.dumps(tags)})
    pipe.execute()


def test_paging_through_equal_timestamps(backend: Any) -> None:
    store = make_store(backend)
    now = 1_764_420_000.25
    entries = [(str(uuid.uuid4()), now + (i // 5), {"workspace": "w"}) for i in range(23)]
    index_trees(store, entries, [r for r, _, _ in entries])
    expected = [r for r, _, _ in sorted(entries, key=lambda e: (e[1], e[0]), reverse=True)]
    for limit in (1, 2, 3, 5, 7):
        for tags in ({}, {"workspace": "w"}):
            seen: list[str] = []
            cursor = None
            while True:
                page = list_trees(store, tags, limit=limit, cursor=cursor)
                seen.extend(t["id"] for t in page.trees)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            assert seen == expected, (limit, tags)


def test_list_rejects_bad_arguments(backend: Any) -> None:
    client = Client(backend)
    store = client.store
    with pytest.raises(JobgroveError, match="unknown tag"):
        list_trees(store, {"colour": "red"})
    for limit in (0, -1, 10_001):
        with pytest.raises(JobgroveError, match="limit"):
            client.list(limit=limit)
    for cursor in ("garbage", "1.5", ":abc", "x:abc"):
        with pytest.raises(JobgroveError, match="cursor"):
            client.list(cursor=cursor)


def _command_calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


# Index entries for tree i: id, score BASE + i, tags from i. Generated inside Redis
# (800,000 arguments would take redis-py seconds to encode); ``fake_tree`` is the same
# rule in Python, for the expected answers.
_FILL_INDEXES = """
local base, n, ns = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local pending = {}
local function add(key, score, member)
  local list = pending[key]
  if not list then list = {}; pending[key] = list end
  list[#list + 1] = score
  list[#list + 1] = member
  if #list >= 1000 then
    redis.call('ZADD', key, unpack(list))
    pending[key] = {}
  end
end
for i = 0, n - 1 do
  local id = string.format('%08x-7a1e-4000-8000-%012x', i, i * 7919)
  local score = base + i
  add(ns .. ':trees', score, id)
  add(ns .. ':tag:workspace:w' .. (i % 4), score, id)
  add(ns .. ':tag:application:a' .. (i % 100), score, id)
  add(ns .. ':tag:version:v' .. (i % 7), score, id)
end
for key, list in pairs(pending) do
  if #list > 0 then redis.call('ZADD', key, unpack(list)) end
end
return n
"""


def fake_tree(i: int, base: float) -> tuple[str, float, dict[str, str]]:
    return (f"{i:08x}-7a1e-4000-8000-{i * 7919:012x}", base + i,
            {"workspace": f"w{i % 4}", "application": f"a{i % 100}", "version": f"v{i % 7}"})


def test_listing_stays_cheap_with_100k_trees(redis_url: str) -> None:
    store = make_store(redis_url)
    admin = store.client
    total = 100_000
    base = 1_700_000_000.0
    assert admin.eval(_FILL_INDEXES, 0, repr(base), total, store.keys.ns) == total
    assert admin.zcard(store.keys.trees) == total
    assert admin.zcard(store.keys.tag("workspace", "w1")) == total // 4
    queries: list[tuple[dict[str, str], int]] = [
        ({}, 50),
        ({"workspace": "w1"}, 50),
        ({"workspace": "w1", "application": "a1"}, 50),  # correlated: all of a1 match
        ({"workspace": "w2", "version": "v3"}, 20),
        ({"workspace": "w0", "application": "a1"}, 50),  # disjoint: nothing matches
        ({"application": "a5", "version": "v0"}, 10),
    ]
    expected: dict[int, list[str]] = {}
    entries: dict[str, tuple[str, float, dict[str, str]]] = {}
    for n, (tags, limit) in enumerate(queries):
        matching = (fake_tree(i, base) for i in range(total - 1, -1, -1))
        found = list(itertools.islice(
            (e for e in matching if all(e[2][k] == v for k, v in tags.items())), limit))
        entries.update((e[0], e) for e in found)
        expected[n] = [e[0] for e in found]
    assert all(expected[n] for n in (0, 1, 2, 3, 5)) and expected[4] == []
    # The records a listed tree's status needs, for the trees listed only.
    pipe = admin.pipeline(transaction=False)
    k = store.keys
    for root, score, tags in entries.values():
        pipe.hset(k.roots, root, root)
        pipe.hset(k.tree_key(root, "state"), root, "SUCCESS")
        pipe.hset(k.tree_key(root, "spec"), root, json.dumps({"kind": "noop", "title": "t"}))
        pipe.hset(k.tree_key(root, "meta"), mapping={"created": repr(score),
                                                     "tags": json.dumps(tags)})
    pipe.execute()
    for n, (tags, limit) in enumerate(queries):
        admin.config_resetstat()
        started = time.perf_counter()
        page = list_trees(store, tags, limit=limit)
        elapsed = time.perf_counter() - started
        calls = _command_calls(admin)
        calls.pop("info", None)
        calls.pop("config|resetstat", None)
        assert [t["id"] for t in page.trees] == expected[n], tags
        for tree in page.trees:
            assert tree["tags"] == entries[tree["id"]][2]
            assert tree["created"] == entries[tree["id"]][1]
        # Cost follows the result (and the smallest index), not the 100,000 stored:
        # no scans, a few index reads, then per listed tree one pipelined status read
        # (a read per status field: 13 since status objects carry attempt, result and
        # progress and list items the counts per state; it was 10 before).
        assert not {"keys", "scan", "sort", "zinterstore", "zinter", "zrange"} & set(calls)
        index_calls = sum(v for c, v in calls.items() if c.startswith("z"))
        assert index_calls >= 1
        assert index_calls <= 2 * (1000 // 100) + 4, (tags, calls)
        assert sum(calls.values()) <= 13 * limit + 30, (tags, calls)
        assert elapsed < 2.0, (tags, elapsed)


@pytest.mark.parametrize("part", ["state", "meta", "summary"])
def test_a_damaged_tree_is_left_out_and_the_others_listed(backend: Any, part: str) -> None:
    from jobgrove.errors import CorruptRecordError

    client = Client(backend)
    spec = {"kind": "noop", "node": "n1", "children": [{"kind": "noop"}]}
    damaged, *others = [client.submit(spec, allow_unknown_node=True) for _ in range(3)]
    key = client.keys.tree_key(damaged, part)
    client.store.client.delete(key)
    client.store.client.set(key, "not a hash")
    listed = {t["id"] for t in client.list().trees}
    assert listed == set(others)
    with pytest.raises(CorruptRecordError, match="not of its type"):
        client.status(damaged)
    assert {t["id"] for t in client.list(state="WAITING").trees} == set(others)
