"""Drawing trees in the terminal (rich): states, durations, live updates."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from jobgrove.core.states import State
from jobgrove.core.status import STATE_ORDER as STATE_NAMES
from jobgrove.core.status import counts, is_done

STYLE = {
    State.NEW: "dim", State.WAITING: "yellow", State.RUNNING: "bold cyan",
    State.SUCCESS: "green", State.FAILED: "bold red", State.ABORTED: "magenta",
}
ICON = {State.NEW: "·", State.WAITING: "…", State.RUNNING: "▶", State.SUCCESS: "✔",
        State.FAILED: "✘", State.ABORTED: "■"}
#: Children shown per job; the rest are summarised in one line (trees can be huge).
MAX_CHILDREN = 12


def duration(job: dict[str, Any], now: float | None = None) -> str:
    started, finished = job.get("started"), job.get("finished")
    if started is None:
        return ""
    return seconds_text((finished if finished is not None else (now or time.time())) - started)


def seconds_text(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def progress_bar(fraction: Any, width: int = 12) -> str:
    """``[#####.......]  42%`` for a fraction from 0 to 1."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
        return ""
    fraction = min(max(float(fraction), 0.0), 1.0)
    done = round(fraction * width)
    return f"[{'#' * done}{'.' * (width - done)}] {fraction * 100:3.0f}%"


def counts_text(counts: dict[str, int]) -> str:
    """``3/7 ok, 1 running, 3 waiting``: successes of the total, then the other states."""
    rest = [f"{counts[s]} {s.lower()}" for s in STATE_NAMES
            if s != State.SUCCESS and counts.get(s)]
    return ", ".join([f"{counts.get(State.SUCCESS, 0)}/{counts.get('total', 0)} ok", *rest])


def _label(job: dict[str, Any], now: float, note: str | None = None) -> Text:
    state = job["state"]
    text = Text()
    text.append(f"{ICON.get(state, '?')} {state:<8}", style=STYLE.get(state, ""))
    text.append(f" {job.get('title') or job.get('kind')}", style="bold")
    text.append(f"  {job['id'][:8]} @{job.get('node')}", style="dim")
    if job.get("run", 1) > 1:
        text.append(f"  run {job['run']}", style="dim")
    spent = duration(job, now)
    if spent:
        text.append(f"  {spent}")
    if job.get("attempt", 1) > 1:
        text.append(f"  attempt {job['attempt']}", style="yellow")
    progress = job.get("progress")
    if state == State.RUNNING and isinstance(progress, dict):
        text.append("  " + progress_bar(progress.get("fraction")), style="cyan")
        if progress.get("message"):
            text.append(f" {progress['message']}", style="dim")
    if job.get("summary") and state == State.WAITING and job.get("attempt", 1) > 1:
        text.append(f"  {job['summary']}", style="dim")  # why it waits to run again
    if job.get("summary") and state in (State.FAILED, State.ABORTED):
        text.append(f"  {job['summary']}", style=STYLE.get(state, ""))
    if job.get("cause") and job["cause"] != job["id"] and state == State.ABORTED:
        text.append(f"  (cause {job['cause'][:8]})", style="dim")
    if note:
        text.append(f"  {note}", style="yellow")
    return text


def draw_tree(status: dict[str, Any], now: float | None = None,
              notes: dict[str, str] | None = None) -> RenderableType:
    """The tree, its jobs labelled; ``notes``: a remark per job id (``waiting for node
    X (lost)``)."""
    now = now or time.time()
    notes = notes or {}
    tree = Tree(_label(status, now, notes.get(status["id"])))
    stack: list[tuple[Tree, dict[str, Any]]] = [(tree, status)]
    while stack:
        branch, job = stack.pop()
        children = job.get("children", [])
        # Show the interesting ones first: running and failed before finished ones.
        order = {State.RUNNING: 0, State.FAILED: 1, State.WAITING: 2, State.ABORTED: 3,
                 State.NEW: 4, State.SUCCESS: 5}
        shown = sorted(children, key=lambda c: order.get(c["state"], 9))[:MAX_CHILDREN] \
            if len(children) > MAX_CHILDREN else children
        for child in shown:
            stack.append((branch.add(_label(child, now, notes.get(child["id"]))), child))
        hidden = [c for c in children if c not in shown] if len(children) > MAX_CHILDREN else []
        if hidden:
            tally: dict[str, int] = {}
            for c in hidden:
                for state, n in counts(c).items():
                    tally[state] = tally.get(state, 0) + n
            branch.add(Text(f"… {len(hidden)} more: " + ", ".join(
                f"{n} {s}" for s, n in sorted(tally.items())), style="dim"))
    summary = counts(status)
    footer = Text("  ".join(f"{s}: {n}" for s, n in sorted(summary.items())), style="dim")
    return Group(tree, footer)


def follow(fetch: Callable[[], dict[str, Any]], wait_change: Callable[[float], object],
           console: Console, extra: Callable[[dict[str, Any]], RenderableType | None]
           | None = None, notes: Callable[[dict[str, Any]], dict[str, str]] | None = None
           ) -> dict[str, Any]:
    """Redraw the tree live until it is done; returns the final status."""
    status = fetch()
    with Live(console=console, refresh_per_second=8, transient=False) as live:
        while True:
            parts: list[RenderableType] = [
                draw_tree(status, notes=notes(status) if notes else None)]
            more = extra(status) if extra else None
            if more is not None:
                parts.append(more)
            live.update(Group(*parts))
            if is_done(status):
                break
            wait_change(0.25)
            status = fetch()
    console.print()
    return status


def follow_tree(client: Any, tree_id: str, console: Console,
                extra: Callable[[dict[str, Any]], RenderableType | None] | None = None
                ) -> dict[str, Any]:
    """``follow`` a stored tree: redrawn on every status message (only a hint to
    re-read) and at least four times a second."""
    root = client.store.resolve_root(tree_id)
    with client.store.tree_hints(root) as hints:
        return follow(lambda: client.status(root), hints.wait, console, extra,
                      notes=client.waiting_notes)
