"""The commands that talk to a cluster: submit, status, abort, list, nodes, logs, token.

Text output is one record per line (``list``, ``nodes``): into a pipe it is never
wrapped nor coloured (``common.console``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rich.markup import escape

from jobgrove.cli.common import (
    OK,
    client_from,
    console,
    outcome_code,
    print_json,
    read_spec,
    viewer_url,
)
from jobgrove.cli.logs import print_log
from jobgrove.cli.render import STYLE, counts_text, draw_tree, follow_tree, seconds_text
from jobgrove.cli.tails import LogTails
from jobgrove.client import Client
from jobgrove.core.spec import TAG_KEYS
from jobgrove.core.states import State
from jobgrove.endpoint.auth import load_secret, mint_token


def _viewer_address(client: Client, node: str | None) -> str | None:
    """The endpoint of ``node`` if it is up, else of any node that is up."""
    up = [n for n in client.registry.nodes() if n.get("alive") and n.get("address")]
    for record in up:
        if record["name"] == node:
            return str(record["address"])
    return str(up[0]["address"]) if up else None


def cmd_submit(args: argparse.Namespace) -> int:
    spec = read_spec(args.spec)
    client = client_from(args)
    tree_id = client.submit(spec, node=args.node, allow_unknown_node=args.allow_unknown_node)
    if args.json and not args.follow:
        print_json({"id": tree_id})
        return OK
    if args.json:
        status = client.wait(tree_id)
        print_json(status)
        return outcome_code(status)
    print(tree_id, flush=True)
    address = _viewer_address(client, client.job(tree_id)["node"])
    if address is not None:
        # stderr: stdout stays the id alone, for scripts.
        print(f"viewer: {viewer_url(address, tree_id)}", file=sys.stderr, flush=True)
    if not args.follow:
        return OK
    tails = LogTails(client)
    try:
        status = follow_tree(client, tree_id, console(), tails.render)
    finally:
        tails.close()
    return outcome_code(status)


def cmd_graft(args: argparse.Namespace) -> int:
    ids = client_from(args).graft(args.parent, read_spec(args.spec),
                                  allow_unknown_node=args.allow_unknown_node)
    if args.json:
        print_json(ids)
    else:
        print("\n".join(ids))
    return OK


def cmd_rerun(args: argparse.Namespace) -> int:
    tree_id = client_from(args).rerun(args.id)
    if args.json:
        print_json({"id": tree_id})
    else:
        print(tree_id)
    return OK


def cmd_status(args: argparse.Namespace) -> int:
    client = client_from(args)
    status = client.status(args.id)
    if args.json:
        print_json(status)
    else:
        console().print(draw_tree(status, notes=client.waiting_notes(status)))
    return outcome_code(status)


def cmd_abort(args: argparse.Namespace) -> int:
    client = client_from(args)
    job_id = client.resolve(args.id)
    outcome = client.abort(job_id)
    if args.json:
        print_json({"id": job_id, "verdict": str(outcome.verdict), "state": outcome.state})
    elif outcome.verdict == "finished":
        print(f"job {job_id} had already finished ({outcome.state}); nothing to abort")
    else:
        print(f"job {job_id}: {outcome.state}; its tree is aborting")
    return OK


def _tree_line(tree: dict[str, Any]) -> str:
    state = tree["tree_state"]
    tags = " ".join(f"{k}={v}" for k, v in tree["tags"].items())
    waiting = "; ".join(f"waiting for node {n} ({why})"
                        for n, why in tree.get("waiting_for", {}).items())
    spent = "" if tree.get("duration") is None else seconds_text(tree["duration"])
    parts = [tree["id"], f"[{STYLE.get(state, '')}]{state:<8}[/]",
             escape(counts_text(tree["counts"])), spent, f"[bold]{escape(tree['title'])}[/]"]
    if tags:
        parts.append(f"[dim]{escape(tags)}[/]")
    if waiting:
        parts.append(f"[yellow]{escape(waiting)}[/]")
    return "  ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    tags = {k: getattr(args, k) for k in TAG_KEYS if getattr(args, k) is not None}
    page = client_from(args).list(**tags, runs_on=args.runs_on, state=args.state,
                                  limit=args.limit, cursor=args.cursor)
    if args.json:
        print_json(page.trees)
        if page.next_cursor:
            print(f"next cursor: {page.next_cursor}", file=sys.stderr)
        return OK
    out = console()
    if not page.trees:
        out.print("no trees match", style="dim")
    for tree in page.trees:
        out.print(_tree_line(tree), soft_wrap=True)
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", style="dim", soft_wrap=True)
    return OK


_NODE_STYLE = {"up": "green", "stopped": "dim", "lost": "red"}


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = client_from(args).nodes()
    if args.json:
        print_json(nodes)
        return OK
    out = console()
    if not nodes:
        out.print("no node has registered yet", style="dim")
    for node in nodes:
        state = node["state"]
        url = viewer_url(node["address"]) if node.get("address") else "-"
        running = ", ".join(j[:8] for j in node.get("running", [])) or "-"
        out.print(f"{escape(node['name']):<16} [{_NODE_STYLE.get(state, '')}]{state:<7}[/]  "
                  f"{escape(url):<28} v{node.get('version', '?')}  "
                  f"concurrency {node.get('concurrency')}  running: {running}",
                  soft_wrap=True)
    return OK


def cmd_logs(args: argparse.Namespace) -> int:
    client = client_from(args)
    job_id = client.resolve(args.id)
    token = args.token or os.environ.get("JOBGROVE_TOKEN")
    state = print_log(client, job_id, follow=args.follow, via=args.via, token=token,
                      out=sys.stdout)
    return 0 if state in (None, State.SUCCESS) or not args.follow else 1


def cmd_token(args: argparse.Namespace) -> int:
    print(mint_token(load_secret(args.secret_file), args.ttl))
    return OK
