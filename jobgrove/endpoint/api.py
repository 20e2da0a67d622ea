"""What the viewer asks of a node besides logs and tree watches: the JSON answers of
``GET /api/trees`` and ``GET /api/nodes``, and the actions sent over the websocket
(``abort``, ``rerun``).

Actions travel on the websocket, not as HTTP requests with a body: the websocket is
authenticated (token, Origin) at its upgrade exactly like the page, and the HTTP side
stays GET/HEAD only, with no request bodies to parse.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jobgrove.core.spec import MAX_NAME, TAG_KEYS
from jobgrove.core.status import STATE_ORDER
from jobgrove.endpoint import wire
from jobgrove.endpoint.http import Request, Response
from jobgrove.errors import (
    JobgroveError,
    RefusedError,
    StoreUnavailableError,
    UnknownJobError,
)
from jobgrove.messaging.listing import MAX_LIMIT, list_trees, parse_cursor
from jobgrove.messaging.registry import Registry, node_state
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)


def refusal(status: int, code: str, message: str) -> Response:
    body = json.dumps({"type": "error", "code": code, "message": message}).encode()
    return Response(status, body)


def as_json(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(obj).encode())


def node_states(registry: Registry) -> dict[str, str]:
    return {n["name"]: node_state(n) for n in registry.nodes()}


_TREES_QUERY = (*TAG_KEYS, "runs_on", "state", "limit", "cursor", "token")


def _trees_query(query: dict[str, str]) -> dict[str, Any]:
    """The filters, limit and cursor of ``GET /api/trees`` (keywords of ``list_trees``);
    JobgroveError naming the parameter and what it allows. An empty value means no
    filter (the viewer's empty boxes)."""
    for key in query:
        if key not in _TREES_QUERY:
            raise JobgroveError(f"unknown query parameter {key[:50]!r} (allowed: "
                                + ", ".join(_TREES_QUERY) + ")")
    tags = {}
    for key in (*TAG_KEYS, "runs_on"):
        value = query.get(key, "")
        if value and (len(value) > MAX_NAME or not value.isprintable()):
            raise JobgroveError(f"{key} must be 1 to {MAX_NAME} printable characters")
        if value:
            tags[key] = value
    state = (query.get("state") or "").upper() or None
    if state is not None and state not in STATE_ORDER:
        raise JobgroveError(f"state must be one of {', '.join(STATE_ORDER)}, got "
                            f"{state[:20]!r}")
    text = query.get("limit", "50")
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise JobgroveError(f"limit must be an integer from 1 to {MAX_LIMIT}, "
                            f"got {text[:20]!r}")
    cursor = query.get("cursor") or None
    if cursor is not None:
        parse_cursor(cursor)
    runs_on = tags.pop("runs_on", None)
    return {"tags": tags, "runs_on": runs_on, "state": state, "limit": int(text),
            "cursor": cursor}


def trees(store: Store, registry: Registry, request: Request) -> Response:
    """``/api/trees?workspace=&application=&version=&instance=&node=&runs_on=&state=
    &limit=&cursor=``: ``{"trees": [...], "next": CURSOR|null}``, each tree the root's
    status with ``tree_state``, ``counts``, ``duration`` and ``waiting_for``. A bad
    parameter is a 400 naming it."""
    try:
        query = _trees_query(request.query)
        page = list_trees(store, query.pop("tags"), **query,
                          node_states=node_states(registry))
    except StoreUnavailableError as exc:
        return refusal(503, "unavailable", str(exc))
    except (JobgroveError, ValueError) as exc:
        return refusal(400, "bad_request", str(exc))
    return as_json({"trees": page.trees, "next": page.next_cursor})


def nodes(registry: Registry, request: Request) -> Response:
    """``/api/nodes``: ``[{"name", "state": up|stopped|lost, "address"}]`` (no secrets,
    no lease tokens). It takes no query parameter but the viewer's ``token``."""
    unknown = sorted(set(request.query) - {"token"})
    if unknown:
        return refusal(400, "bad_request", f"unknown query parameter {unknown[0][:50]!r} "
                       "(/api/nodes takes none)")
    try:
        records = registry.nodes()
    except StoreUnavailableError as exc:
        return refusal(503, "unavailable", str(exc))
    return as_json([{"name": n["name"], "state": node_state(n), "address": n.get("address")}
                    for n in records])


def action(store: Store, request: wire.Abort | wire.Rerun, peer: str) -> bytes:
    """Carry out a viewer's action; the frame that answers it."""
    try:
        if isinstance(request, wire.Rerun):
            root, run = store.rerun(request.job)
            log.info("viewer %s reran tree %s (run %d)", peer, root, run)
            return wire.rerun_frame(root, run)
        outcome = store.abort(request.job)
    except UnknownJobError as exc:
        return wire.error_frame("not_found", str(exc), job=request.job)
    except RefusedError as exc:
        return wire.error_frame("bad_request", str(exc), job=request.job)
    except StoreUnavailableError as exc:
        return wire.error_frame("unavailable", str(exc), job=request.job)
    log.info("viewer %s aborted job %s: %s (%s)", peer, request.job, outcome.verdict,
             outcome.state)
    return wire.aborted_frame(request.job, str(outcome.verdict), str(outcome.state))
