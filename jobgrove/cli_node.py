"""CLI commands that run things: ``node``, ``logs``, ``token``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from jobgrove.errors import JobgroveError

log = logging.getLogger("jobgrove.cli")


def _read_secret(path: str | None) -> bytes | None:
    from jobgrove.auth import load_secret

    return None if path is None else load_secret(path)


def _import_kinds(modules: list[str]) -> None:
    from jobgrove.cli import UsageError

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import-time error is bad input to the CLI
            raise UsageError(f"--import {module}: {type(exc).__name__}: {exc}") from exc


def run_node(args: argparse.Namespace) -> int:
    from jobgrove.messaging.connection import redis_url
    from jobgrove.node import Node
    from jobgrove.notify import CommandNotifier

    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _import_kinds(args.imports)
    secret = _read_secret(args.secret_file)
    notifier = CommandNotifier(args.notify_command)
    node = Node(args.name, redis=redis_url(args.redis), log_dir=args.log_dir,
                concurrency=args.concurrency, abort_grace=args.abort_grace,
                lease=args.lease, reconcile_interval=args.reconcile_interval,
                namespace=args.namespace, notifier=notifier,
                listen=None if args.listen.lower() in ("", "none") else args.listen,
                advertise=args.advertise, secret=secret,
                allowed_origins=tuple(args.allow_origin))
    signals = {"count": 0}
    first, second = threading.Event(), threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        signals["count"] += 1
        (first if signals["count"] == 1 else second).set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node.start()
    print(f"node {node.name} running; endpoint {node.address or 'disabled'}; "
          f"logs in {node.log_dir}", file=sys.stderr, flush=True)
    while not first.wait(0.5):
        pass
    log.info("stopping gracefully: nothing new starts; running jobs finish "
             "(signal again to stop at once)")
    try:
        node.drain()
        node.wait_idle(timeout=float("inf"), interrupt=second)
    except JobgroveError as exc:
        log.warning("drain failed: %s", exc)
    node.stop(graceful=False)
    notifier.join(timeout=5)
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from jobgrove.cli import UsageError, _client

    try:
        from jobgrove.messaging.ws_client import print_log
    except ImportError as exc:
        raise UsageError("log streaming is not available in this build") from exc
    client = _client(args)
    token = args.token or os.environ.get("JOBGROVE_TOKEN")
    state = print_log(client, args.id, follow=args.follow, via=args.via, token=token,
                      out=sys.stdout)
    return 0 if state in (None, "SUCCESS") or not args.follow else 1


def run_token(args: argparse.Namespace) -> int:
    from jobgrove.auth import mint_token

    secret = _read_secret(args.secret_file)
    assert secret is not None
    print(mint_token(secret, args.ttl))
    return 0
