"""The commands that talk to a cluster: submit, status, abort, list, nodes, logs, token."""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from jobgrove.cli.common import OK, client_from, outcome_code, print_json, read_spec
from jobgrove.cli.logs import print_log
from jobgrove.cli.render import STYLE, draw_tree, duration, follow_tree
from jobgrove.cli.tails import LogTails
from jobgrove.core.spec import TAG_KEYS
from jobgrove.core.states import State
from jobgrove.endpoint.auth import load_secret, mint_token

NODE_STYLE = {"up": "[green]{}[/]", "stopped": "[dim]{}[/]", "lost": "[red]{}[/]"}


def cmd_submit(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    client = client_from(args)
    tree_id = client.submit(spec, node=args.node, allow_unknown_node=args.allow_unknown_node)
    if not args.follow:
        if args.json:
            print_json({"id": tree_id})
        else:
            print(tree_id)
        return OK
    if args.json:
        status = client.wait(tree_id)
        print_json(status)
    else:
        print(tree_id)

        tails = LogTails(client)
        try:
            status = follow_tree(client, tree_id, Console(), tails.render)
        finally:
            tails.close()
    return outcome_code(status)


def cmd_status(args: argparse.Namespace) -> int:
    status = client_from(args).status(args.id)
    if args.json:
        print_json(status)
    else:
        Console().print(draw_tree(status))
    return outcome_code(status)


def cmd_abort(args: argparse.Namespace) -> int:
    client = client_from(args)
    outcome = client.abort(args.id)
    if outcome.verdict == "finished":
        print(f"job {args.id} had already finished ({outcome.state}); nothing to abort")
    else:
        print(f"job {args.id}: {outcome.state}; its tree is aborting")
    return OK


def cmd_list(args: argparse.Namespace) -> int:
    tags = {k: getattr(args, k) for k in TAG_KEYS if getattr(args, k) is not None}
    page = client_from(args).list(**tags, limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json(page.trees)
        if page.next_cursor:
            print(f"next cursor: {page.next_cursor}", file=sys.stderr)
        return OK
    console = Console()
    if not page.trees:
        console.print("no trees match", style="dim")
    for tree in page.trees:
        tag_text = " ".join(f"{k}={v}" for k, v in tree["tags"].items())
        console.print(f"{tree['id']}  [{STYLE.get(tree['state'], '')}]{tree['state']:<8}"
                      f"[/]  {tree['title']}  [dim]{tag_text}  {duration(tree)}[/]",
                      highlight=False)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", style="dim", highlight=False)
    return OK


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = client_from(args).nodes()
    if args.json:
        print_json(nodes)
        return OK
    console = Console()
    if not nodes:
        console.print("no node has registered yet", style="dim")
    for node in nodes:
        state = NODE_STYLE.get(node["state"], "{}").format(f"{node['state']:<7}")
        running = ", ".join(j[:8] for j in node.get("running", [])) or "-"
        console.print(f"{node['name']:<16} {state}  {node.get('address') or '-':<22} "
                      f"v{node.get('version', '?')}  concurrency {node.get('concurrency')}  "
                      f"running: {running}", highlight=False)
    return OK


def cmd_logs(args: argparse.Namespace) -> int:
    client = client_from(args)
    token = args.token or os.environ.get("JOBGROVE_TOKEN")
    state = print_log(client, args.id, follow=args.follow, via=args.via, token=token,
                      out=sys.stdout)
    return 0 if state in (None, State.SUCCESS) or not args.follow else 1


def cmd_token(args: argparse.Namespace) -> int:
    print(mint_token(load_secret(args.secret_file), args.ttl))
    return OK
