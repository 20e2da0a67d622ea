"""What every command shares: exit codes, the usage error, the client from the global
options, reading a spec file, printing JSON, and the terminal console."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from jobgrove.client import Client
from jobgrove.core.states import State
from jobgrove.core.status import is_done
from jobgrove.errors import JobgroveError
from jobgrove.messaging.connection import redis_url

OK, NOT_SUCCESS, BAD_INPUT, UNAVAILABLE = 0, 1, 2, 3
#: Wide enough that no record is ever wrapped when the output is not a terminal.
_PIPE_WIDTH = 1_000_000


class UsageError(JobgroveError):
    """Bad command-line use that argparse itself cannot see (exit code 2)."""


def client_from(args: argparse.Namespace) -> Client:
    return Client(redis_url(args.redis), namespace=args.namespace)


def viewer_url(address: str, tree_id: str | None = None) -> str:
    """The viewer page of a node endpoint (``host:port``), opened on ``tree_id``. A
    wildcard host (the node listens on every address) is shown as this host's name."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::"):
        address = f"{socket.gethostname()}:{port}"
    return f"http://{address}/" + (f"#tree={tree_id}" if tree_id else "")


def console() -> Console:
    """The console commands print with. Into a pipe or a file: no colour, no wrapping
    and no cropping, so each record stays one line (``rich`` would wrap at 80 columns).
    On a terminal, records print with ``soft_wrap=True`` (``record``) so the terminal,
    not a newline, folds a long one."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=_PIPE_WIDTH, soft_wrap=True, no_color=True, highlight=False,
                   emoji=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def outcome_code(status: dict[str, Any]) -> int:
    """1 for a done tree that did not succeed, else 0 (a running tree is not a failure)."""
    return NOT_SUCCESS if is_done(status) and status["state"] != State.SUCCESS else OK


def read_spec(path: str) -> Any:
    """A spec file (``-``: stdin) as JSON; UsageError naming the file otherwise."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read spec file {path!r}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise UsageError(f"{path}: JSON nested too deeply") from exc
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON: {exc}") from exc
