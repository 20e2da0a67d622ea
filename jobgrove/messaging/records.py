"""What the store hands back: claims, outcomes, and the decoding of stored JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from jobgrove.errors import CorruptRecordError


class Verdict(str, enum.Enum):
    """What a state-change script did."""

    OK = "ok"  #: applied
    STALE = "stale"  #: a finish whose run token no longer matches: nothing changed
    FINISHED = "finished"  #: an abort of a job that had already finished
    UNKNOWN = "unknown"  #: no such job
    ERROR = "error"  #: Redis answered with an error that a retry would not change

    def __str__(self) -> str:
        return self.value


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
    """What a finish or abort did, and the job's state after it (for ``ERROR``, the
    error's text)."""

    verdict: Verdict
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


# -- decoding what Redis holds or returns ------------------------------------------------
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


def decode_claims(root: str, flat: list[Any]) -> list[Claim]:
    """A claim script's reply: the tree context (JSON), then per job its id, run token,
    spec (JSON) and children's results (a JSON object of JSON texts)."""
    if not flat:
        return []
    context = decode_map(flat[0], "tree context")
    return [_claim(root, flat[i:i + 4], context) for i in range(1, len(flat), 4)]


def _claim(root: str, item: list[Any], context: dict[str, Any]) -> Claim:
    job_id, token, spec, results = item
    return Claim(root, job_id, token, load_json(spec, f"job {job_id} spec"),
                 decode_map(results, f"children results of {job_id}"), context)


def decode_outcome(root: str, reply: list[Any]) -> Outcome:
    """A finish/abort script's reply: verdict, state, then for a finish that made the
    parent runnable its node, and if the reporter claimed it, the context and the claim."""
    ready_on = (reply[2] or None) if len(reply) > 2 else None
    claimed = None
    if len(reply) > 3:
        claimed = _claim(root, reply[4:8], decode_map(reply[3], "tree context"))
    return Outcome(Verdict(reply[0]), reply[1], ready_on, claimed)


def safe_outcome(root: str, reply: Any) -> Outcome:
    """``decode_outcome`` for one reply of a pipeline: an error reply, or one that does
    not decode, becomes an ``ERROR`` outcome instead of an exception."""
    if isinstance(reply, Exception):
        return Outcome(Verdict.ERROR, str(reply))
    try:
        return decode_outcome(root, reply)
    except (CorruptRecordError, IndexError, TypeError, ValueError) as exc:
        return Outcome(Verdict.ERROR, f"unreadable reply {reply!r:.200}: {exc}")
