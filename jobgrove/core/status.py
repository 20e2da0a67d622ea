"""Status objects: the contract's JSON shape of a job, nested by children."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def nest_status(flat: Mapping[str, dict[str, Any]], root: str) -> dict[str, Any]:
    """Nest flat status objects into a tree, starting at ``root``.

    Each flat object carries ``child_ids`` (the order of the spec); the result
    has ``children`` lists instead, built iteratively (trees can be very deep).
    """
    out: dict[str, dict[str, Any]] = {}
    for job_id, record in flat.items():
        item = {k: v for k, v in record.items() if k != "child_ids"}
        item["children"] = []
        out[job_id] = item
    stack = [root]
    while stack:
        job_id = stack.pop()
        for child in flat[job_id].get("child_ids", ()):
            if child in out:
                out[job_id]["children"].append(out[child])
                stack.append(child)
    return out[root]

