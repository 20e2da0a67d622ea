"""Helpers shared by the store's contract tests."""

from __future__ import annotations

from typing import Any

from jobgrove.core.model import TreeModel
from jobgrove.core.spec import parse_spec
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.connection import connect, decoded
from jobgrove.messaging.store import Store

NODES = ("n1", "n2")


def make_store(backend: Any) -> Store:
    client = connect(backend) if isinstance(backend, str) else decoded(backend)
    return Store(client)


def submit(store: Store, spec: dict[str, Any], tags: dict[str, str] | None = None
           ) -> tuple[str, TreeModel]:
    if tags:
        spec = {**spec, "tags": tags}
    jobs, parsed_tags = parse_spec(spec, kind_infos())
    root = store.submit(jobs, parsed_tags)
    assert root == jobs[0].id
    return root, TreeModel(jobs)
