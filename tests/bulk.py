"""Many small trees, fast: ``submit_many`` stores trees through ``Store.submit`` itself
(so exactly the keys a real submit writes, indexes included) but sends all of them in
one pipeline per thousand trees; ``abort_many`` then ends them (done, ``ABORTED``) with
the real abort script, pipelined too. Used by the retention tests and scripts/bench.
Keep it free of pytest."""

from __future__ import annotations

import socket
from typing import Any

import hiredis

from jobgrove.core.spec import parse_spec
from jobgrove.jobs.api import kind_infos
from jobgrove.messaging.scripts import TreeScript
from jobgrove.messaging.store import Store


class _SharedPipeline:
    """A pipeline whose ``execute`` does nothing: the commands stay queued in the one
    real pipeline behind it, sent by ``_Deferring.flush``."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def execute(self) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


class _Deferring:
    """A stand-in for the redis client ``Store.submit`` uses: one real pipeline behind
    all of its pipelines, and a clock that moves one microsecond per tree (distinct
    creation times, as real submits have)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pipe = client.pipeline(transaction=False)
        seconds, micros = client.time()
        self._now = int(seconds) * 1_000_000 + int(micros)

    def time(self) -> tuple[int, int]:
        self._now += 1
        return divmod(self._now, 1_000_000)

    def pipeline(self, transaction: bool = True) -> _SharedPipeline:
        return _SharedPipeline(self._pipe)

    def flush(self) -> None:
        send_fast(self._client, [args for args, _ in self._pipe.command_stack])
        self._pipe.reset()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _resp(args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def send_fast(client: Any, commands: list[Any]) -> list[Any]:
    """Send ``commands`` (argument tuples) as one pipeline on a socket of its own and
    read every reply: redis-py's own pipeline costs tens of microseconds per command,
    too slow for a hundred thousand trees. Raises on the first error reply."""
    kwargs = client.connection_pool.connection_kwargs
    replies: list[Any] = []
    reader = hiredis.Reader(encoding="utf-8")
    with socket.create_connection((kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379)),
                                  timeout=60) as sock:
        if kwargs.get("db"):
            commands = [("SELECT", kwargs["db"]), *commands]
        for start in range(0, len(commands), 5000):
            chunk = commands[start:start + 5000]
            sock.sendall(b"".join(_resp(c) for c in chunk))
            want = len(replies) + len(chunk)
            while len(replies) < want:
                reply = reader.gets()
                if reply is False:
                    data = sock.recv(1 << 20)
                    if not data:
                        raise ConnectionError("redis-server closed the connection")
                    reader.feed(data)
                elif isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"{reply} (after {len(replies)} replies)")
                else:
                    replies.append(reply)
    return replies


def submit_many(client: Any, count: int, node: str = "bulk", *, jobs: int = 1,
                tags: dict[str, str] | None = None, per_round: int = 10000) -> list[str]:
    """``count`` trees of ``jobs`` no-op jobs on ``node``; their ids. ``client``: a
    redis-py client (decoded responses)."""
    spec: dict[str, Any] = {"kind": "noop", "node": node, "title": "bulk",
                            "children": [{"kind": "noop"} for _ in range(jobs - 1)]}
    if tags:
        spec["tags"] = tags
    infos = kind_infos([])
    roots: list[str] = []
    while len(roots) < count:  # a round at a time: the pipeline lives in memory
        deferring = _Deferring(client)
        store = Store(deferring)
        for _ in range(min(per_round, count - len(roots))):
            parsed, tree_tags = parse_spec(spec, infos)
            roots.append(store.submit(parsed, tree_tags))
        deferring.flush()
    return roots


def abort_many(client: Any, roots: list[str]) -> None:
    """End these trees (users aborting them: every job ABORTED, the trees done)."""
    store = Store(client)
    script = TreeScript(client, "abort")
    client.script_load(script.text)
    commands = []
    for root in roots:
        keys, argv = script.call_args(store.keys, root, {"job": root})
        commands.append(("EVALSHA", script.sha, len(keys), *keys, *argv))
    send_fast(client, commands)
