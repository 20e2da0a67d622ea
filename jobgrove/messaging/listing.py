"""Tag queries: trees matching every given tag, newest first, with a limit and paging.

Each tag value has a sorted set of roots scored by creation time. A query walks the
smallest matching index newest-first, a page at a time, and keeps the roots that are
in every other index (ZMSCORE) — so its cost follows the result size, not the number
of trees stored.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jobgrove.core.ids import is_job_id
from jobgrove.core.spec import TAG_KEYS
from jobgrove.errors import JobgroveError
from jobgrove.messaging.redis_errors import translate_errors
from jobgrove.messaging.store import Store

MAX_LIMIT = 10_000


@dataclasses.dataclass(frozen=True)
class Page:
    trees: list[dict[str, Any]]
    #: Pass back as ``cursor`` for the next (older) page; None when this was the last.
    next_cursor: str | None


def parse_cursor(cursor: str | None) -> tuple[str, str | None]:
    """(max score, root after which to continue) of a page's ``next_cursor``;
    JobgroveError if it is not one."""
    if not cursor:
        return "+inf", None
    score, sep, root = cursor.partition(":")
    try:
        finite = math.isfinite(float(score))
    except ValueError:
        finite = False
    if not sep or not finite or not is_job_id(root):
        raise JobgroveError(f"invalid cursor {cursor[:100]!r} (pass the cursor a previous "
                            "page returned)")
    return score, root


@translate_errors
def list_trees(store: Store, tags: dict[str, str] | None = None, *, limit: int = 50,
               cursor: str | None = None) -> Page:
    """Trees whose tags match all of ``tags`` (root status objects, no children)."""
    tags = {k: v for k, v in (tags or {}).items() if v is not None}
    for key in tags:
        if key not in TAG_KEYS:
            raise JobgroveError(f"unknown tag {key!r} (allowed: {', '.join(TAG_KEYS)})")
    if not 1 <= limit <= MAX_LIMIT:
        raise JobgroveError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    client = store.client
    keys = [store.keys.tag(k, v) for k, v in sorted(tags.items())] or [store.keys.trees]
    if len(keys) > 1:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        sizes = pipe.execute()
        keys = [k for _, k in sorted(zip(sizes, keys))]
    driver, others = keys[0], keys[1:]
    max_score, after_root = parse_cursor(cursor)
    found: list[tuple[str, float]] = []
    batch = max(limit * 2, 100)
    offset = 0
    exhausted = False
    while len(found) < limit and not exhausted:
        page = client.zrevrangebyscore(driver, max_score, "-inf", start=offset, num=batch,
                                       withscores=True)
        offset += len(page)
        exhausted = len(page) < batch
        if after_root is not None:
            # Same score as the cursor: skip up to and including the cursor's root.
            page = [(r, s) for r, s in page if s != float(max_score) or r < after_root]
        if others and page:
            pipe = client.pipeline(transaction=False)
            for key in others:
                pipe.zmscore(key, [r for r, _ in page])
            member = pipe.execute()
            page = [p for i, p in enumerate(page) if all(m[i] is not None for m in member)]
        found.extend(page)
    found = found[:limit]
    # An index entry of a tree whose keys were removed (by hand, or a delete half-done)
    # has no status: it is left out.
    trees = store.root_statuses([root for root, _ in found])
    next_cursor = f"{found[-1][1]!r}:{found[-1][0]}" if len(found) == limit else None
    return Page(trees, next_cursor)
