"""``jobgrove node``: run a node in this process until SIGINT/SIGTERM.

Its options are ``NodeConfig``'s fields (``jobgrove.config``): the help text, the
default and the check of each are stated there once.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from jobgrove.cli.common import viewer_url
from jobgrove.config import DEFAULT_LISTEN, NodeConfig, node_name, parse_setting, settings
from jobgrove.errors import JobgroveError
from jobgrove.jobs.output import OutsideJobs
from jobgrove.messaging.connection import redis_url
from jobgrove.node import Node

log = logging.getLogger("jobgrove.cli")


def _argument_type(name: str, check: Callable[[str], Any]) -> Callable[[str], Any]:
    """``check`` as an argparse type: its ValueError message becomes the usage error."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names it in "invalid ... value" messages
    return parse


def _show(default: Any) -> str:
    if default in (None, ()):
        return "none"
    return str(default)


def add_node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, type=_argument_type("name", node_name),
                        help="this node's name (jobs name the node they run on) (required)")
    for field in settings():
        flag = field.metadata.get("flag")
        if flag is None:
            continue
        default = DEFAULT_LISTEN if field.name == "listen" else field.default
        help_text = field.metadata["help"].split(" (an embedded")[0]
        if "default:" not in help_text:
            help_text += f" (default: {_show(default)})"
        parse = _argument_type(field.name, functools.partial(parse_setting, field))
        if field.metadata.get("repeat"):
            parser.add_argument(flag, dest=field.name, action="append", default=[],
                                type=parse, metavar=field.metadata["metavar"], help=help_text)
        else:
            parser.add_argument(flag, dest=field.name, default=default, type=parse,
                                metavar=field.metadata["metavar"], help=help_text)


def config_from(args: argparse.Namespace) -> NodeConfig:
    values: dict[str, Any] = {}
    for field in settings():
        if field.metadata.get("flag") is None:
            continue
        value = getattr(args, field.name)
        if field.metadata.get("repeat"):
            # Each occurrence parses to a tuple (a flag may list several): flatten.
            value = tuple(item for part in value for item in part)
        elif isinstance(value, str) and field.name == "listen":
            value = parse_setting(field, value)
        values[field.name] = value
    return NodeConfig(namespace=args.namespace, **values)


def run_node(args: argparse.Namespace) -> int:
    level = getattr(logging, args.log_level or "INFO")
    # The root logger lets INFO through whatever --log-level says, so that job code's
    # logging.info reaches its job's log; --log-level filters what the node prints,
    # and what jobs log never shows up here (OutsideJobs).
    logging.basicConfig(level=min(level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(level)
        handler.addFilter(OutsideJobs())
    node = Node(args.name, redis=redis_url(args.redis), config=config_from(args))
    signals = {"count": 0}
    first, second = threading.Event(), threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        signals["count"] += 1
        (first if signals["count"] == 1 else second).set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node.start()
    if node.address:
        viewer = f"viewer {viewer_url(node.address)}"
        if node.secret is not None:
            viewer += " (add ?token=... from `jobgrove token --secret-file FILE`)"
    else:
        viewer = "no endpoint (--listen none)"
    print(f"node {node.name} running: {viewer}; job logs in {node.log_dir}",
          file=sys.stderr, flush=True)
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
    return 0
