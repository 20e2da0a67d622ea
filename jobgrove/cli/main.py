"""The ``jobgrove`` command line: the parser and the dispatch to the commands.

Exit codes: 0 ok; 1 the tree finished but not SUCCESS; 2 bad usage or input (a
malformed Redis URL included), unknown id; 3 Redis unavailable.

The global options (``--redis``, ``--log-level``, ``--json``) may come before or after
the command: the main parser holds their defaults, and each command's parser repeats
them with no default of its own (``SUPPRESS``), so a value given after the command
overrides one given before it and nothing is reset.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from jobgrove._version import __version__
from jobgrove.cli import commands, ops
from jobgrove.cli.common import BAD_INPUT, OK, UNAVAILABLE, UsageError
from jobgrove.cli.demo import run_demo
from jobgrove.cli.node_cmd import add_node_options, run_node
from jobgrove.core.status import STATE_ORDER
from jobgrove.errors import JobgroveError, StoreUnavailableError
from jobgrove.messaging.connection import DEFAULT_URL, redis_url
from jobgrove.messaging.urls import check_url, redacted

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Commands that print JSON with --json.
JSON_COMMANDS = ("submit", "graft", "rerun", "status", "abort", "list", "nodes", "delete",
                 "prune")
#: Commands that never talk to Redis (no URL check).
OFFLINE_COMMANDS = ("token", "demo")
ID_HELP = "a job id, or any unique prefix of one (at least 8 characters)"


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


def _state(text: str) -> str:
    if text.upper() not in STATE_ORDER:
        raise argparse.ArgumentTypeError(f"{text!r} is not a state (one of "
                                         f"{', '.join(STATE_ORDER)})")
    return text.upper()


def _add_globals(parser: argparse.ArgumentParser, json: bool, top: bool) -> None:
    """The global options; ``top``: with their defaults (main parser), else SUPPRESSed
    so that a command's parser never overwrites what was given before the command."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--redis", metavar="URL", default=default(None),
                        help=f"Redis URL: redis://, rediss://, unix://, "
                             "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] or "
                             "redis+cluster://HOST:PORT[,HOST:PORT...] (default: "
                             f"$JOBGROVE_REDIS_URL, else {DEFAULT_URL})")
    parser.add_argument("--log-level", metavar="LEVEL", choices=LEVELS,
                        default=default(None),
                        help=f"{', '.join(LEVELS)}: what jobgrove itself logs to stderr "
                             "(default: INFO for node, WARNING otherwise)")
    parser.add_argument("--namespace", default=default("jg"), help=argparse.SUPPRESS)
    if json:
        parser.add_argument("--json", action="store_true", default=default(False),
                            help="print JSON, one document, instead of text"
                                 + (f" ({', '.join(JSON_COMMANDS)})" if top else "")
                                 + " (default: text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobgrove", description="jobgrove: trees of jobs on a cluster of nodes. "
        "Global options may come before or after the command.",
        epilog="exit codes: 0 ok; 1 the tree finished but not SUCCESS; 2 bad usage or "
               "input (a malformed Redis URL too), unknown or ambiguous id; 3 Redis "
               "unavailable")
    parser.add_argument("--version", action="version", version=f"jobgrove {__version__}",
                        help="print the version and exit")
    _add_globals(parser, json=True, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_text: str
            ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        # `--retention -1d`, `--older-than -5m`: a (bad) value, not an unknown option,
        # so that its check says what is wrong with it (no option starts with a digit).
        p._negative_number_matcher = re.compile(r"^-\d")
        _add_globals(p, json=name in JSON_COMMANDS, top=False)
        p.set_defaults(fn=fn)
        return p

    p = add("node", run_node, "run a node until SIGINT/SIGTERM (second signal: immediate)")
    add_node_options(p)

    p = add("submit", commands.cmd_submit, "submit a tree spec; prints the tree's id")
    p.add_argument("spec", metavar="SPEC.json", help="the tree spec (JSON), or - for stdin")
    p.add_argument("--node", metavar="NAME",
                   help="node of the jobs the spec assigns to none (default: the spec's)")
    p.add_argument("--allow-unknown-node", action="store_true",
                   help="accept jobs for nodes that never registered: they wait until "
                        "such a node starts (default: refuse them)")
    p.add_argument("--follow", action="store_true",
                   help="show the tree live until it is done (default: return at once)")

    p = add("graft", commands.cmd_graft,
            "add subtrees under a job that has not started (it waits for them too); "
            "prints each new subtree root id, one a line")
    p.add_argument("parent", metavar="PARENT",
                   help=ID_HELP + ": the job (NEW or WAITING) to add the subtrees under")
    p.add_argument("spec", metavar="SPEC.json",
                   help="one subtree (a JSON object) or several (an array); - for stdin")
    p.add_argument("--allow-unknown-node", action="store_true",
                   help="accept jobs for nodes that never registered (default: refuse "
                        "them)")

    p = add("rerun", commands.cmd_rerun,
            "run again what did not succeed in a done tree; prints the tree id")
    p.add_argument("id", help=ID_HELP + "; any job of the tree")

    p = add("status", commands.cmd_status, "show a whole tree with each job's state")
    p.add_argument("id", help=ID_HELP + "; any job of the tree")

    p = add("abort", commands.cmd_abort, "abort the tree of a job (as if that job failed)")
    p.add_argument("id", help=ID_HELP)

    p = add("list", commands.cmd_list, "trees matching all given filters, newest first")
    p.add_argument("--workspace", metavar="W", help="trees tagged workspace=W (default: any)")
    p.add_argument("--application", metavar="A",
                   help="trees tagged application=A (default: any)")
    p.add_argument("--version", metavar="V", help="trees tagged version=V (default: any)")
    p.add_argument("--instance", metavar="I", help="trees tagged instance=I (default: any)")
    p.add_argument("--node", metavar="N", help="trees whose root is *tagged* node=N (a tag "
                   "like the others; for where jobs run see --runs-on) (default: any)")
    p.add_argument("--runs-on", metavar="NODE", dest="runs_on",
                   help="trees with any job assigned to NODE (default: any)")
    p.add_argument("--state", metavar="STATE", type=_state,
                   help="trees in this derived state: RUNNING while any job runs, else "
                        "the root's state once it finished, else WAITING (default: any)")
    p.add_argument("--limit", metavar="K", type=_positive_int, default=50,
                   help="at most K trees (default: 50)")
    p.add_argument("--cursor", metavar="C",
                   help="continue after a previous page (default: from the newest)")

    p = add("logs", commands.cmd_logs, "print a job's log from any node (-f: follow it live)")
    p.add_argument("id", help=ID_HELP)
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the job ends (default: print what is there)")
    p.add_argument("--via", metavar="HOST:PORT",
                   help="node endpoint to ask (default: the job's node, else any live node)")
    p.add_argument("--token", metavar="TOKEN",
                   help="viewer token, for a cluster with a secret (default: $JOBGROVE_TOKEN)")

    p = add("nodes", commands.cmd_nodes, "known nodes (up, stopped or lost), their viewer "
            "URLs and what they run; `nodes forget NAME` removes a stopped or lost one")
    ops.add_nodes_forget(p)
    ops.add_commands(add)

    p = add("token", commands.cmd_token, "print a viewer token (needs the cluster secret)")
    p.add_argument("--ttl", type=_positive_float, default=3600.0, metavar="SECONDS",
                   help="how long the token is valid (default: 3600)")
    p.add_argument("--secret-file", metavar="FILE", required=True,
                   help="the cluster secret file (required)")

    p = add("demo", lambda args: run_demo(fast=args.fast),
            "an embedded cluster (no Redis server needed) running sample trees live")
    p.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    return parser


def _setup(args: argparse.Namespace) -> None:
    if args.command not in OFFLINE_COMMANDS:
        check_url(redis_url(args.redis))
    if args.command == "node":
        return  # the node sets up its own logging (run_node)
    logging.basicConfig(level=getattr(logging, args.log_level or "WARNING"),
                        format="jobgrove: %(levelname)s %(name)s: %(message)s")
    if getattr(args, "json", False) and args.command not in JSON_COMMANDS:
        raise UsageError(f"--json does not apply to {args.command} (only to "
                         f"{', '.join(JSON_COMMANDS)})")
    args.json = bool(getattr(args, "json", False))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _setup(args)
        return int(args.fn(args))
    except StoreUnavailableError as exc:
        print(f"jobgrove {args.command}: error: Redis unavailable at "
              f"{redacted(redis_url(getattr(args, 'redis', None)))} "
              f"({exc.__cause__ or exc})", file=sys.stderr)
        return UNAVAILABLE
    except JobgroveError as exc:
        # Bad input of any kind: a spec, an id (unknown, ambiguous), a URL, a setting.
        print(f"jobgrove {args.command}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`jobgrove list | head`): not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
