"""What the store hands back: claims, outcomes, and the decoding of stored JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from jobgrove.errors import CorruptRecordError


@dataclasses.dataclass(frozen=True)
class Claim:
    """A job this node has just moved to RUNNING, with the token that fences it."""

    root: str
    id: str
    token: str
    spec: dict[str, Any]
    #: Results of its children (id -> value), and the tree context when claimed.
    results: dict[str, Any]
    context: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a finish or abort did: ``verdict`` ok/stale/finished/unknown (or "error",
    with the error's text as ``state``), and the final state."""

    verdict: str
    state: str
    #: After a SUCCESS: the node whose job (the parent) just became runnable, if any.
    ready_on: str | None = None
    #: The parent, claimed in the same step for the reporting node (``Finish.claim``).
    claimed: Claim | None = None


@dataclasses.dataclass(frozen=True)
class Finish:
    """One outcome to record (see ``Store.finish_many``)."""

    root: str
    job_id: str
    token: str
    ok: bool
    summary: str = ""
    result: Any = None
    #: The node recording it: if the parent becomes runnable there, no hint is published
    #: (that node claims it at once, see ``Outcome.ready_on``).
    reporter: str = ""
    #: Claim the parent for ``reporter`` in the same step if it becomes runnable there.
    claim: bool = False


def load_json(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CorruptRecordError(f"{what}: not valid JSON ({exc})") from exc


def decode_map(raw: str, what: str) -> dict[str, Any]:
    """A JSON object whose values are themselves JSON texts (as Lua passes them)."""
    outer = load_json(raw, what)
    if isinstance(outer, list):  # cjson encodes an empty table as []
        return {}
    return {key: load_json(value, f"{what} {key}") for key, value in outer.items()}


def to_float(raw: Any) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None
