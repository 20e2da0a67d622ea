"""What the store hands back: claims, outcomes, and the decoding of stored JSON."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from jobgrove.errors import CorruptRecordError, FencedError

_CLAIM = 7  # items per claimed job in a script reply (see lua/common.lua claim_one)


class Verdict(str, enum.Enum):
    """What a state-change script did."""

    OK = "ok"  #: applied
    STALE = "stale"  #: a finish whose run token no longer matches: nothing changed
    FINISHED = "finished"  #: an abort of a job that had already finished
    UNKNOWN = "unknown"  #: no such job
    FENCED = "fenced"  #: refused: the reporting process no longer holds its node name
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
    #: Which attempt this run is (1-based; retries make more).
    attempt: int = 1
    #: The tree's run (1-based; each rerun makes one more).
    run: int = 1


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
    #: (job id, why): a claimed parent whose record did not decode (the store fails it).
    corrupt: tuple[str, str] | None = None
    #: A failed attempt with retries left: seconds until the job may run again.
    retry_in: float | None = None


@dataclasses.dataclass(frozen=True)
class Holder:
    """A node process holding its node name: what claims and outcomes are fenced on.

    ``instance`` is random per process (per registration); ``epoch`` grows with every
    registration of the name, so a process that lost its name has an older one."""

    node: str
    instance: str
    epoch: int


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
    #: The process that claimed the job (None: the store's own, for tools and tests).
    holder: Holder | None = None
    #: (log size, its last bytes as text): stored with the outcome (``logtails``).
    log_tail: tuple[int, str] | None = None
    #: The attempt and the tree's run of the claim (``Claim.attempt``, ``Claim.run``):
    #: given, a job found WAITING for them lost its claim in a failover although it
    #: ran, and is claimed again in the same step (never run twice). None: never.
    attempt: int | None = None
    run: int | None = None


# -- decoding what Redis holds or returns ------------------------------------------------
def load_json(raw: str, what: str) -> Any:
    # The empty ones are most of what claims carry (no results, no grafted children).
    if raw == "[]":
        return []
    if raw == "{}":
        return {}
    try:
        return json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise CorruptRecordError(f"{what}: not valid JSON ({exc})") from exc


def decode_map(raw: str, what: str) -> dict[str, Any]:
    """A JSON object whose values are themselves JSON texts (as Lua passes them)."""
    outer = load_json(raw, what)
    if isinstance(outer, list) and not outer:  # cjson encodes an empty table as []
        return {}
    if not isinstance(outer, dict):
        raise CorruptRecordError(f"{what}: not a JSON object")
    return {key: load_json(value, f"{what} {key}") for key, value in outer.items()}


def to_float(raw: Any) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def reported_corrupt(reply: Any) -> tuple[Any, dict[str, str]]:
    """A claim or finish script's reply without its trailing ``['corrupt', id, why,
    ...]`` (the jobs the script failed as corrupt records), and those jobs (id -> why)."""
    if isinstance(reply, list) and reply and isinstance(reply[-1], list) \
            and reply[-1][:1] == ["corrupt"]:
        pairs = reply[-1][1:]
        return reply[:-1], {str(i): str(why) for i, why in zip(pairs[::2], pairs[1::2])}
    return reply, {}


def decode_claims(root: str, flat: list[Any]) -> tuple[list[Claim], dict[str, str]]:
    """A claim script's reply: 'ok' (or 'fenced': FencedError), then if jobs were
    claimed the tree context (JSON) and per job its id, run token, spec (JSON),
    children's results (a JSON object of JSON texts) and attempt. Returns the claims, and the jobs
    whose records did not decode (id -> why): the caller fails those."""
    if flat and flat[0] == "fenced":
        raise FencedError("claim refused: this process no longer holds its node name")
    if len(flat) < 2:
        return [], {}
    try:
        context = decode_map(flat[1], "tree context")
    except CorruptRecordError as exc:
        return [], {flat[i]: str(exc) for i in range(2, len(flat), _CLAIM)}
    claims: list[Claim] = []
    bad: dict[str, str] = {}
    for i in range(2, len(flat), _CLAIM):
        try:
            claims.append(_claim(root, flat[i:i + _CLAIM], context))
        except CorruptRecordError as exc:
            bad[flat[i]] = str(exc)
    return claims, bad


def _claim(root: str, item: list[Any], context: dict[str, Any]) -> Claim:
    job_id, token, raw_spec, results, attempt, run, grafted = item
    spec = load_json(raw_spec, f"spec of job {job_id}")
    if not isinstance(spec, dict):
        raise CorruptRecordError(f"spec of job {job_id} is not a JSON object")
    more = load_json(grafted, f"grafted children of job {job_id}")
    if more:
        spec["children"] = [*spec.get("children", []), *more]
    return Claim(root, job_id, token, spec,
                 decode_map(results, f"children results of {job_id}"), context,
                 int(attempt), int(run))


def decode_outcome(root: str, reply: list[Any]) -> Outcome:
    """A finish/abort script's reply: verdict, state, then for a finish that made the
    parent runnable its node, and if the reporter claimed it, the context and the claim."""
    verdict, state = Verdict(reply[0]), reply[1]
    if state == "WAITING" and len(reply) > 3:  # a failed attempt that will be retried
        return Outcome(verdict, state, retry_in=float(reply[3]))
    ready_on = (reply[2] or None) if len(reply) > 2 else None
    if len(reply) <= 3:
        return Outcome(verdict, state, ready_on)
    try:
        claimed = _claim(root, reply[4:4 + _CLAIM], decode_map(reply[3], "tree context"))
    except CorruptRecordError as exc:
        return Outcome(verdict, state, None, None, (reply[4], str(exc)))
    return Outcome(verdict, state, ready_on, claimed)


def safe_outcome(root: str, reply: Any) -> Outcome:
    """``decode_outcome`` for one reply of a pipeline: an error reply, or one that does
    not decode, becomes an ``ERROR`` outcome instead of an exception."""
    if isinstance(reply, Exception):
        return Outcome(Verdict.ERROR, str(reply))
    try:
        return decode_outcome(root, reply)
    except (CorruptRecordError, IndexError, TypeError, ValueError) as exc:
        return Outcome(Verdict.ERROR, f"unreadable reply {reply!r:.200}: {exc}")
