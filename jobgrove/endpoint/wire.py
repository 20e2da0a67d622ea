"""The websocket wire format: parsing what viewers send (JSON requests) and building
what they receive (complete websocket frames).

Every incoming message is a JSON text frame checked here before anything else sees
it; a bad one becomes a ``WireError`` whose ``frame()`` is the error frame to send
back (the connection stays usable). Job ids must be canonical UUIDs: nothing a
client sends is ever used as a path.

Outgoing frames are built once as complete websocket frames (server frames are not
masked, and compression is never negotiated), so one log chunk is encoded once and
the same bytes are queued to every viewer.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import struct
from typing import Any

from jobgrove.core.ids import MIN_PREFIX, is_id_or_prefix

#: Largest request a client may send; bigger ones get a ``too_large`` error frame.
MAX_REQUEST_BYTES = 4096
#: Largest websocket message accepted at all: above it the connection is closed (1009).
MAX_MESSAGE_BYTES = 64 * 1024
#: Largest byte offset accepted (JSON numbers stay exact below 2**53).
MAX_OFFSET = 2**53

ERROR_CODES = ("not_found", "bad_request", "unauthorized", "too_large", "unavailable")


def _qmark(exc: UnicodeError) -> tuple[str, int]:
    # One '?' per undecodable byte keeps len(text.encode()) equal to the bytes read,
    # so byte offsets computed by clients from the text stay exact.
    assert isinstance(exc, UnicodeDecodeError)
    return "?" * (exc.end - exc.start), exc.end


codecs.register_error("jobgrove-qmark", _qmark)


class WireError(Exception):
    """A request that cannot be served; ``frame()`` is the error frame to send."""

    def __init__(self, code: str, message: str, job: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.job = job

    def frame(self) -> bytes:
        return error_frame(self.code, self.message, job=self.job)


@dataclasses.dataclass(frozen=True)
class Subscribe:
    job: str
    offset: int = 0
    #: False: send what the log holds now, then ``live`` and stop (``jobgrove logs``).
    follow: bool = True


@dataclasses.dataclass(frozen=True)
class Unsubscribe:
    job: str


@dataclasses.dataclass(frozen=True)
class Watch:
    tree: str


@dataclasses.dataclass(frozen=True)
class Unwatch:
    tree: str


@dataclasses.dataclass(frozen=True)
class Abort:
    """Abort the tree of ``job`` as if that job had failed (the viewer's button)."""

    job: str


@dataclasses.dataclass(frozen=True)
class Rerun:
    """Rerun what did not succeed in the done tree of ``job``."""

    job: str


WsRequest = Subscribe | Unsubscribe | Watch | Unwatch | Abort | Rerun


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _job_id(msg: dict[str, Any], field: str) -> str:
    if field not in msg:
        raise WireError("bad_request", f"missing field {field!r}")
    value = msg[field]
    if not is_id_or_prefix(value):
        raise WireError("bad_request", f"{field!r} must be a job id (a UUID such as "
                        f"39d4f79d-2196-4d80-9cf8-fe18c4c27618) or a unique prefix of one "
                        f"(at least {MIN_PREFIX} characters), got {_short(value)}")
    return str(value)


def parse_request(data: str | bytes) -> WsRequest:
    """One incoming websocket message -> a request, or raise WireError."""
    if isinstance(data, (bytes, bytearray)):
        raise WireError("bad_request", "binary frames are not accepted: send JSON text")
    if len(data) > MAX_REQUEST_BYTES:
        raise WireError("too_large", f"request of {len(data)} characters; the limit is "
                        f"{MAX_REQUEST_BYTES}")
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise WireError("bad_request", f"invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise WireError("bad_request", "a request must be a JSON object with a 'type'")
    kind = msg.get("type")
    if kind == "subscribe":
        job = _job_id(msg, "job")
        offset = msg.get("offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) \
                or not 0 <= offset <= MAX_OFFSET:
            raise WireError("bad_request", "'offset' must be a byte offset (an integer "
                            f">= 0), got {_short(offset)}", job=job)
        follow = msg.get("follow", True)
        if not isinstance(follow, bool):
            raise WireError("bad_request", "'follow' must be true or false", job=job)
        return Subscribe(job, offset, follow)
    if kind == "unsubscribe":
        return Unsubscribe(_job_id(msg, "job"))
    if kind == "watch":
        return Watch(_job_id(msg, "tree"))
    if kind == "unwatch":
        return Unwatch(_job_id(msg, "tree"))
    if kind == "abort":
        return Abort(_job_id(msg, "job"))
    if kind == "rerun":
        return Rerun(_job_id(msg, "job"))
    if "type" not in msg:
        raise WireError("bad_request", "missing field 'type'")
    raise WireError("bad_request", f"unknown type {_short(kind)} (expected subscribe, "
                    "unsubscribe, watch, unwatch or abort)")


# -- outgoing ----------------------------------------------------------------------------
def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A complete, unmasked, unfragmented websocket frame (server to client)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return ws_frame(struct.pack("!H", code) + reason.encode("utf-8")[:120], opcode=0x8)


def json_frame(obj: dict[str, Any]) -> bytes:
    return ws_frame(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def decode_log(data: bytes) -> str:
    """Log bytes as text with exactly one character-byte per undecodable byte."""
    return data.decode("utf-8", "jobgrove-qmark")


def utf8_cut(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a character."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its sequence fit?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else \
                3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
            return n if back >= need else n - back
    return n  # only continuation bytes: invalid anyway, decoded as '?'


def log_frame(job: str, offset: int, data: bytes) -> bytes:
    return json_frame({"type": "log", "job": job, "offset": offset,
                       "data": decode_log(data)})


def live_frame(job: str, offset: int, state: str) -> bytes:
    return json_frame({"type": "live", "job": job, "offset": offset, "state": state})


def end_frame(job: str, state: str, offset: int) -> bytes:
    return json_frame({"type": "end", "job": job, "state": state, "offset": offset})


def kept_frame(job: str, first: int, size: int, missing: int, message: str) -> bytes:
    """(extension) The log served is the end its node stored in Redis: it starts at byte
    ``first`` of ``size``; ``missing`` bytes this subscription asked for were not kept."""
    return json_frame({"type": "kept", "job": job, "offset": first, "size": size,
                       "missing": missing, "message": message})


def error_frame(code: str, message: str, *, job: str | None = None,
                tree: str | None = None) -> bytes:
    obj: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if job is not None:
        obj["job"] = job
    if tree is not None:
        obj["tree"] = tree
    return json_frame(obj)


def tree_frame(status: dict[str, Any]) -> bytes:
    return json_frame({"type": "tree", "tree": status})


_STATUS_FIELDS = ("tree", "node", "summary", "cause", "started", "finished", "attempt",
                  "progress")


def status_frame(event: dict[str, Any]) -> bytes:
    """A status frame from a pub/sub status event (or a status object)."""
    out: dict[str, Any] = {"type": "status", "job": event.get("job") or event.get("id"),
                           "state": event.get("state")}
    for field in _STATUS_FIELDS:
        value = event.get(field)
        if field in ("started", "finished") and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        out[field] = value
    if out["tree"] is None and event.get("root"):
        out["tree"] = event["root"]
    return json_frame(out)


def progress_frame(job: str, progress: Any) -> bytes:
    """A running job reported how far it got (``{"fraction", "message"}``)."""
    return json_frame({"type": "progress", "job": job, "progress": progress})


def done_frame(tree: str, state: str) -> bytes:
    return json_frame({"type": "done", "tree": tree, "state": state})


def rerun_frame(tree: str, run: int) -> bytes:
    """The answer to ``rerun``: the tree runs again, as run number ``run``."""
    return json_frame({"type": "rerun", "tree": tree, "run": run})


def aborted_frame(job: str, verdict: str, state: str) -> bytes:
    """The answer to ``abort``: ``verdict`` ``ok`` (the tree is aborting) or
    ``finished`` (the job had already finished: nothing done), and the job's state."""
    return json_frame({"type": "aborted", "job": job, "verdict": verdict, "state": state})
