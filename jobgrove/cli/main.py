"""The ``jobgrove`` command line: the parser and the dispatch to the commands.

Exit codes: 0 ok; 1 the tree finished but not SUCCESS; 2 bad usage or input, unknown
id; 3 Redis unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from jobgrove._version import __version__
from jobgrove.cli import commands, ops
from jobgrove.cli.common import BAD_INPUT, OK, UNAVAILABLE, UsageError
from jobgrove.cli.demo import run_demo
from jobgrove.cli.node_cmd import add_node_options, run_node
from jobgrove.core.spec import TAG_KEYS
from jobgrove.errors import JobgroveError, SpecError, StoreUnavailableError, UnknownJobError
from jobgrove.messaging.connection import redis_url


# -- parser -----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis", metavar="URL",
                        help="Redis URL (default: $JOBGROVE_REDIS_URL, else "
                             "redis://127.0.0.1:6379/0)")
    common.add_argument("--namespace", default="jg", help=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="jobgrove", description="jobgrove: trees of jobs on a cluster of nodes.",
        epilog="exit codes: 0 ok; 1 the tree finished but not SUCCESS; 2 bad usage or "
               "input, unknown id; 3 Redis unavailable")
    parser.add_argument("--version", action="version", version=f"jobgrove {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_text: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("node", run_node, "run a node until SIGINT/SIGTERM (second signal: immediate)")
    add_node_options(p)
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    p = add("submit", commands.cmd_submit, "submit a tree spec (JSON file, or - for stdin)")
    p.add_argument("spec", metavar="SPEC.json")
    p.add_argument("--node", help="node of jobs that name none")
    p.add_argument("--allow-unknown-node", action="store_true")
    p.add_argument("--follow", action="store_true", help="show the tree live until it ends")
    p.add_argument("--json", action="store_true")

    p = add("status", commands.cmd_status, "show a whole tree with each job's state")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = add("abort", commands.cmd_abort, "abort the tree of a job (as if that job failed)")
    p.add_argument("id")

    p = add("list", commands.cmd_list, "trees matching all given tags, newest first")
    for key in TAG_KEYS:
        p.add_argument(f"--{key}")
    p.add_argument("--limit", type=_positive_int, default=50)
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--json", action="store_true")

    p = add("logs", commands.cmd_logs, "print a job's log from any node (-f: follow it live)")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--via", metavar="HOST:PORT", help="node endpoint to ask (default: any "
                                                      "live node)")
    p.add_argument("--token", help="viewer token (default: $JOBGROVE_TOKEN)")

    p = add("nodes", commands.cmd_nodes, "known nodes (up, stopped or lost) and what they "
            "run; `nodes forget NAME` removes a stopped or lost one")
    p.add_argument("--json", action="store_true")
    ops.add_nodes_forget(p)
    ops.add_commands(add)

    p = add("token", commands.cmd_token, "print a viewer token (needs the cluster secret)")
    p.add_argument("--ttl", type=_positive_float, default=3600.0, metavar="SECONDS")
    p.add_argument("--secret-file", metavar="FILE", required=True)

    p = add("demo", lambda args: run_demo(fast=args.fast),
            "an embedded cluster (no Redis server needed) running sample trees live")
    p.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except (SpecError, UnknownJobError, UsageError) as exc:
        print(f"jobgrove {args.command}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except StoreUnavailableError as exc:
        print(f"jobgrove {args.command}: error: Redis unavailable at "
              f"{redis_url(getattr(args, 'redis', None))} ({exc.__cause__ or exc})",
              file=sys.stderr)
        return UNAVAILABLE
    except JobgroveError as exc:
        print(f"jobgrove {args.command}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`jobgrove list | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
