"""What the viewer asks of a node besides logs and tree watches: the JSON answers of
``GET /api/trees`` and ``GET /api/nodes``, and the actions sent over the websocket
(``abort``; ``rerun`` once the store has it).

Actions travel on the websocket, not as HTTP requests with a body: the websocket is
authenticated (token, Origin) at its upgrade exactly like the page, and the HTTP side
stays GET/HEAD only, with no request bodies to parse.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from jobgrove.core.spec import TAG_KEYS
from jobgrove.core.status import STATE_ORDER
from jobgrove.endpoint import wire
from jobgrove.endpoint.http import Request, Response
from jobgrove.errors import JobgroveError, StoreUnavailableError, UnknownJobError
from jobgrove.messaging.listing import MAX_LIMIT, list_trees
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


def trees(store: Store, registry: Registry, request: Request) -> Response:
    """``/api/trees?workspace=&application=&version=&instance=&node=&runs_on=&state=
    &limit=&cursor=``: ``{"trees": [...], "next": CURSOR|null}``, each tree the root's
    status with ``tree_state``, ``counts``, ``duration`` and ``waiting_for``."""
    query = request.query
    tags = {k: v for k, v in query.items() if k in TAG_KEYS and v}
    state = (query.get("state") or "").upper() or None
    try:
        if state is not None and state not in STATE_ORDER:
            raise JobgroveError(f"unknown state {state!r}")
        limit = int(query.get("limit", "50"))
        page = list_trees(store, tags, limit=max(1, min(limit, MAX_LIMIT)),
                          cursor=query.get("cursor") or None,
                          runs_on=query.get("runs_on") or None, state=state,
                          node_states=node_states(registry))
    except StoreUnavailableError as exc:
        return refusal(503, "unavailable", str(exc))
    except (JobgroveError, ValueError) as exc:
        return refusal(400, "bad_request", str(exc))
    return as_json({"trees": page.trees, "next": page.next_cursor})


def nodes(registry: Registry) -> Response:
    """``/api/nodes``: ``[{"name", "state": up|stopped|lost, "address"}]`` (no secrets,
    no lease tokens)."""
    try:
        records = registry.nodes()
    except StoreUnavailableError as exc:
        return refusal(503, "unavailable", str(exc))
    return as_json([{"name": n["name"], "state": node_state(n), "address": n.get("address")}
                    for n in records])


def action(store: Store, request: wire.Abort | wire.Rerun, peer: str) -> bytes:
    """Carry out a viewer's action; the frame that answers it."""
    if isinstance(request, wire.Rerun):
        return wire.error_frame("bad_request", "rerun is not available on this node yet",
                                job=request.job)
    try:
        outcome = store.abort(request.job)
    except UnknownJobError as exc:
        return wire.error_frame("not_found", str(exc), job=request.job)
    except StoreUnavailableError as exc:
        return wire.error_frame("unavailable", str(exc), job=request.job)
    log.info("viewer %s aborted job %s: %s (%s)", peer, request.job, outcome.verdict,
             outcome.state)
    return wire.aborted_frame(request.job, str(outcome.verdict), str(outcome.state))
