"""``jobgrove demo``: an embedded two-node cluster (fakeredis, no Redis server) that runs
a sample tree live, shows its logs, then a failing tree being aborted."""

from __future__ import annotations

import logging
import tempfile
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule

from jobgrove.cli.render import follow_tree
from jobgrove.cli.tails import LogTails, file_reader
from jobgrove.client import Client
from jobgrove.core.states import State
from jobgrove.core.status import counts, walk
from jobgrove.jobs.log import log_path
from jobgrove.messaging.connection import fake_client, fake_server
from jobgrove.node import Node


def _shell(script: str) -> dict[str, Any]:
    return {"command": ["/bin/sh", "-c", script]}


def sample_tree(pause: float) -> dict[str, Any]:
    return {
        "title": "deploy shop v3", "kind": "noop", "node": "n1",
        "tags": {"workspace": "demo", "application": "shop", "version": "3"},
        "children": [
            {"title": "build", "kind": "shell", "node": "n2", "params": _shell(
                f"for step in fetch compile link package; do echo \"build: $step\"; "
                f"sleep {pause}; done")},
            {"title": "checks", "kind": "noop", "children": [
                {"title": "unit tests", "kind": "shell", "params": _shell(
                    f"for t in cart checkout payment; do echo \"test_$t ... ok\"; "
                    f"sleep {pause}; done")},
                {"title": "lint", "kind": "sleep", "node": "n2",
                 "params": {"seconds": pause * 2}},
            ]},
            {"title": "provision", "kind": "sleep", "params": {"seconds": pause * 3}},
        ],
    }


def failing_tree(pause: float) -> dict[str, Any]:
    return {
        "title": "nightly batch", "kind": "noop", "node": "n1",
        "tags": {"workspace": "demo", "application": "batch"},
        "children": [
            {"title": "load", "kind": "noop", "children": [
                {"title": "extract", "kind": "sleep", "params": {"seconds": pause * 20}},
                {"title": "transform", "kind": "shell", "node": "n2", "params": _shell(
                    f"echo 'reading 1200 rows'; sleep {pause * 2}; "
                    "echo 'row 17: bad date' >&2; exit 3")},
            ]},
            {"title": "report", "kind": "sleep", "node": "n2",
             "params": {"seconds": pause * 30}},
        ],
    }


def _show_log(console: Console, log_dirs: dict[str, str], job: dict[str, Any]) -> None:
    text = log_path(log_dirs[job["node"]], job["id"]).read_text(encoding="utf-8")
    console.print(Panel(text.rstrip(), title=f"log of {job['title']} ({job['id'][:8]} "
                        f"@{job['node']})", title_align="left", border_style="dim"),
                  highlight=False)


def _titled(status: dict[str, Any], title: str) -> dict[str, Any]:
    return next(job for job in walk(status) if job["title"] == title)


def run_demo(fast: bool = False) -> int:
    logging.basicConfig(level=logging.ERROR)
    console = Console()
    pause = 0.05 if fast else 0.4
    server = fake_server()
    with tempfile.TemporaryDirectory(prefix="jobgrove-demo-") as tmp:
        log_dirs = {name: f"{tmp}/{name}" for name in ("n1", "n2")}
        nodes = [Node(name, redis=fake_client(server), log_dir=path, concurrency=4,
                      abort_grace=5.0).start() for name, path in log_dirs.items()]
        try:
            client = Client(fake_client(server))
            tails = LogTails(client, file_reader(log_dirs))
            console.print(Rule("jobgrove demo: an embedded cluster of nodes n1 and n2"))
            ok = _run(console, client, tails, log_dirs, sample_tree(pause), State.SUCCESS)
            console.print(Rule("a failing tree: one job fails, the whole tree stops"))
            ok = _run(console, client, tails, log_dirs, failing_tree(pause), State.ABORTED) and ok
            console.print(Rule("trees tagged workspace=demo, newest first"))
            for tree in client.list(workspace="demo").trees:
                console.print(f"  {tree['id']}  {tree['state']:<8} {tree['title']}",
                              highlight=False)
        finally:
            for node in nodes:
                node.stop(graceful=False)
    return 0 if ok else 1


def _run(console: Console, client: Client, tails: LogTails, log_dirs: dict[str, str],
         spec: dict[str, Any], expected: str) -> bool:
    tree_id = client.submit(spec)
    console.print(f"submitted [bold]{spec['title']}[/] as {tree_id}", highlight=False)
    status = follow_tree(client, tree_id, console, tails.render)
    console.print()
    if expected == State.SUCCESS:
        _show_log(console, log_dirs, _titled(status, "build"))
    else:
        _show_log(console, log_dirs, _titled(status, "transform"))
        _show_log(console, log_dirs, _titled(status, "extract"))
        tally = counts(status)
        never = [j["title"] for j in walk(status) if j["started"] is None]
        console.print(f"outcome: root {status['state']}; {tally.get('FAILED', 0)} failed, "
                      f"{tally.get('ABORTED', 0)} aborted; never started: {', '.join(never)}",
                      highlight=False)
    return bool(status["state"] == expected)
