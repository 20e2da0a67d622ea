"""Commands for running a cluster over months: ``delete``, ``prune`` and ``nodes
forget`` (registered by ``main.build_parser`` through ``add_commands`` and
``add_nodes_forget``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from jobgrove.cli import commands
from jobgrove.cli.common import OK, UsageError, client_from, print_json
from jobgrove.core.durations import parse_duration

Adder = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(add: Adder) -> None:
    """``delete`` and ``prune``, through ``build_parser``'s own ``add``."""
    p = add("delete", cmd_delete, "delete a done tree: its keys, index entries and log "
            "files (refused while a job of it runs)")
    p.add_argument("id", help="a job of the tree: its id, or any unique prefix of one (at "
                   "least 8 characters)")
    p = add("prune", cmd_prune, "delete the done trees whose root finished before now "
            "minus DURATION")
    p.add_argument("--older-than", type=_duration, required=True, metavar="DURATION",
                   help="90s, 15m, 12h, 7d (0: every done tree) (required)")
    p.add_argument("--dry-run", action="store_true",
                   help="only say which trees (default: delete them)")
    p.add_argument("--archive-dir", metavar="DIR",
                   help="first write each tree's full status to DIR/<tree-id>.json "
                   "(default: no archive)")


def add_nodes_forget(p: argparse.ArgumentParser) -> None:
    """``nodes forget NAME`` on the ``nodes`` command (``nodes [--json]`` stays)."""
    p.add_argument("action", nargs="?", choices=["forget"], help="forget NAME: remove a "
                   "stopped or lost node that runs nothing")
    p.add_argument("node_name", nargs="?", metavar="NAME", help="the node to forget")
    p.set_defaults(fn=cmd_nodes)


def cmd_delete(args: argparse.Namespace) -> int:
    root = client_from(args).delete(args.id)
    if args.json:
        print_json({"deleted": root})
    else:
        print(f"deleted tree {root}")
    return OK


def cmd_prune(args: argparse.Namespace) -> int:
    result = client_from(args).prune(args.older_than, dry_run=args.dry_run,
                                     archive_dir=args.archive_dir)
    if args.json:
        print_json({"would_delete" if args.dry_run else "deleted": result.count,
                    "trees": result.trees})
    elif args.dry_run:
        for root in result.trees:
            print(root)
        print(f"would delete {result.count} tree(s)", file=sys.stderr)
    else:
        archived = f" (archived in {args.archive_dir})" if args.archive_dir else ""
        print(f"deleted {result.count} tree(s){archived}")
    return OK


def cmd_nodes(args: argparse.Namespace) -> int:
    if args.action is None:
        if args.node_name is not None:
            raise UsageError(f"unexpected argument {args.node_name!r} (did you mean "
                             f"`nodes forget {args.node_name}`?)")
        return commands.cmd_nodes(args)
    if args.node_name is None:
        raise UsageError("nodes forget: which node? (nodes forget NAME)")
    if args.json:
        raise UsageError("nodes forget takes no --json")
    client_from(args).forget_node(args.node_name)
    print(f"forgot node {args.node_name}")
    return OK
