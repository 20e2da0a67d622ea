"""``jobgrove node``: run a node in this process until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from jobgrove.cli.common import UsageError
from jobgrove.endpoint.auth import load_secret
from jobgrove.errors import JobgroveError
from jobgrove.messaging.connection import redis_url
from jobgrove.node import Node
from jobgrove.notify import CommandNotifier

log = logging.getLogger("jobgrove.cli")


def _read_secret(path: str | None) -> bytes | None:
    return None if path is None else load_secret(path)


def _import_kinds(modules: list[str]) -> None:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:  # any import-time error is bad input to the CLI
            raise UsageError(f"--import {module}: {type(exc).__name__}: {exc}") from exc


def run_node(args: argparse.Namespace) -> int:
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
