"""The log-broadcast actor: fans job logs and tree status out to websocket viewers.

Every log is served from a file at byte offsets (a ``Feed``, see ``log_feeds``): a
local job's own log file, or for a job of another node a spool file that one upstream
websocket per job (``Upstream``) mirrors from the owning node. The actor owns the
feeds, the viewers' subscriptions and tree watches, and the pub/sub channels they need.

The actor never touches Redis (a Redis outage must not stall log delivery): callers
resolve jobs first, and state checks go through the endpoint's lookup thread, which
tells the results back.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.messages import (
    JobStates,
    LogGrew,
    Relay,
    RelayKind,
    Resync,
    SubscribeLog,
    Tick,
    TreeEvent,
    TreeSnapshot,
    UnsubscribeLog,
    UnwatchTree,
    Viewer,
    ViewerClosed,
    ViewerDrained,
    WatchTree,
)
from jobgrove.core.states import FINISHED, State
from jobgrove.core.status import find, walk
from jobgrove.endpoint import wire
from jobgrove.endpoint.feeds import Feed, GrowthGate, Subscription
from jobgrove.endpoint.lookups import Lookup
from jobgrove.endpoint.relay import Upstream
from jobgrove.jobs.log import log_path

log = logging.getLogger(__name__)

#: A relayed feed with no viewers is kept this long, so a viewer that reconnects
#: resumes from the spool instead of the owning node.
LINGER = 5.0
#: Seconds a relayed log may go without word from the owning node before viewers that
#: asked for the log as it is now (``follow`` false) get an error instead.
PATIENCE = 10.0
_RANK: dict[str, int] = {State.NEW: 0, State.WAITING: 1, State.RUNNING: 2}


#: What a watcher has been told of a job: (attempt, state).
Seen = tuple[int, str]


def progressed(old: Seen | None, new: Seen) -> bool:
    """Whether ``new`` is news after ``old``: a later attempt (a retry), or a state
    further on in the same attempt (states only move forward within one)."""
    if old is None or new[0] > old[0]:
        return True
    if new[0] < old[0] or old[1] in FINISHED:
        return False
    return new[1] in FINISHED or _RANK.get(new[1], 0) > _RANK.get(old[1], 0)


def _seen(status: dict[str, Any]) -> dict[str, Seen]:
    return {job["id"]: (int(job.get("attempt") or 1), job["state"]) for job in walk(status)}


class LogBroadcast(Actor):
    """Owns every viewer subscription and watch of one node endpoint."""

    def __init__(self, node_name: str, log_dir: str, spool_dir: str, gate: GrowthGate,
                 start_upstream: Callable[..., Upstream],
                 channels: Callable[[str, bool, Callable[[], None] | None], None],
                 lookup: Callable[[Lookup, Any], None], max_relays: int = 64) -> None:
        super().__init__()
        self.node_name = node_name
        self.log_dir = log_dir
        self.spool_dir = Path(spool_dir)
        self.gate = gate
        self.start_upstream = start_upstream
        # (root, on, on_live) -> listener subscribe/unsubscribe; on_live is called in the
        # listener's thread once the channel's subscription is sent (or at once if it was).
        self.channels = channels
        self.lookup = lookup  # (what, arg) -> Redis read done elsewhere, told back
        self.max_relays = max_relays
        self.feeds: dict[str, Feed] = {}
        self.watches: dict[str, dict[int, tuple[Viewer, dict[str, Seen]]]] = {}
        self.redraw: set[str] = set()  # grafted or rerun: watchers get the whole tree
        self.by_conn: dict[int, set[str]] = {}
        self.refs: dict[str, int] = {}
        self._gens = itertools.count(1)

    def on_start(self) -> None:
        self.gate.actor = self.actor_ref

    def on_stop(self) -> None:
        for feed in self.feeds.values():
            feed.close()
        self.feeds.clear()

    # -- channel references ----------------------------------------------------------------
    def _ref(self, root: str, delta: int) -> None:
        count = self.refs.get(root, 0) + delta
        if count > 0:
            if root not in self.refs:
                self.channels(root, True, None)
            self.refs[root] = count
        elif root in self.refs:
            del self.refs[root]
            self.channels(root, False, None)

    # -- subscriptions -----------------------------------------------------------------
    @handles(SubscribeLog)
    def _on_subscribe(self, msg: SubscribeLog) -> None:
        if msg.conn.closed:
            return
        feed = self.feeds.get(msg.job)
        kept: dict[int, Subscription] = {}
        if feed is not None and not feed.local and msg.offset < feed.base:
            # The mirror starts after this offset: mirror again from the earlier one.
            kept, feed.subs = feed.subs, {}
            self._close_feed(feed)
            feed = None
        if feed is None and not kept and msg.node != self.node_name \
                and sum(not f.local for f in self.feeds.values()) >= self.max_relays:
            msg.conn.push(wire.error_frame(
                "unavailable", f"this node already relays {self.max_relays} logs of other "
                f"nodes; subscribe on node {msg.node} itself", job=msg.job))
            return
        if feed is None:
            feed = self._new_feed(msg, kept)
            feed.subs.update(kept)
        feed.idle_since = None
        sub = feed.subs[msg.conn.id] = Subscription(msg.conn, msg.offset, msg.follow)
        feed.note_kept(sub)
        self.by_conn.setdefault(msg.conn.id, set()).add(msg.job)
        if feed.local and feed.final is None:
            feed.end = max(feed.end, feed.size_now())
            if msg.state in FINISHED:
                feed.finish_local(msg.state)
        self._pump(feed)

    def _new_feed(self, msg: SubscribeLog, keep: dict[int, Subscription]) -> Feed:
        local = msg.node == self.node_name
        path = log_path(self.log_dir, msg.job) if local else \
            self.spool_dir / f"{msg.job}.{time.monotonic_ns()}.log"
        feed = Feed(msg.job, msg.root, msg.node, path, local, state=msg.state,
                    gen=next(self._gens))
        self.feeds[msg.job] = feed
        self._ref(msg.root, 1)
        self.gate.watch(frozenset(j for j, f in self.feeds.items() if f.local))
        if not local:
            lowest = min([msg.offset, *(s.offset for s in keep.values())])
            feed.base = feed.end = lowest
            path.touch()
            feed.open()
            feed.upstream = self.start_upstream(self.actor_ref, msg.job, msg.node, lowest,
                                                path, feed.gen)
        return feed

    @handles(UnsubscribeLog)
    def _on_unsubscribe(self, msg: UnsubscribeLog) -> None:
        self._drop_sub(msg.conn.id, msg.job)

    @handles(UnwatchTree)
    def _on_unwatch(self, msg: UnwatchTree) -> None:
        self._unwatch(msg.conn.id, msg.root)

    @handles(ViewerDrained)
    def _on_drained(self, msg: ViewerDrained) -> None:
        for job in list(self.by_conn.get(msg.conn.id, ())):
            if job in self.feeds:
                self._pump(self.feeds[job])

    @handles(ViewerClosed)
    def _on_closed(self, msg: ViewerClosed) -> None:
        cid = msg.conn.id
        for job in list(self.by_conn.pop(cid, ())):
            self._drop_sub(cid, job)
        for root in list(self.watches):
            self._unwatch(cid, root)

    def _unwatch(self, cid: int, root: str) -> None:
        watchers = self.watches.get(root, {})
        if watchers.pop(cid, None) is not None:
            self._ref(root, -1)
        if not watchers:
            self.watches.pop(root, None)

    def _drop_sub(self, cid: int, job: str) -> None:
        self.by_conn.get(cid, set()).discard(job)
        feed = self.feeds.get(job)
        if feed is None or feed.subs.pop(cid, None) is None or feed.subs:
            return
        if feed.local:
            self._close_feed(feed)
        else:
            feed.idle_since = time.monotonic()

    def _close_feed(self, feed: Feed) -> None:
        feed.close()
        del self.feeds[feed.job]
        self._ref(feed.root, -1)
        self.gate.watch(frozenset(j for j, f in self.feeds.items() if f.local))

    @handles(LogGrew)
    def _on_growth(self, msg: LogGrew) -> None:
        size = self.gate.take(msg.job)
        feed = self.feeds.get(msg.job)
        if feed is not None and feed.local and feed.final is None and size > feed.end:
            feed.end = size
            feed.open()
            self._pump(feed)

    def _ended(self, feed: Feed, cids: list[int]) -> None:
        for cid in cids:
            self.by_conn.get(cid, set()).discard(feed.job)
        if not feed.subs and feed.idle_since is None and not feed.local:
            feed.idle_since = time.monotonic()

    # -- sending -------------------------------------------------------------------------
    def _pump(self, feed: Feed) -> None:
        for cid in feed.pump():
            self.by_conn.get(cid, set()).discard(feed.job)
        if not feed.subs:
            if feed.local:
                self._close_feed(feed)
            elif feed.idle_since is None:
                feed.idle_since = time.monotonic()

    # -- job states ----------------------------------------------------------------------
    def _job_state(self, job: str, state: str) -> None:
        feed = self.feeds.get(job)
        if feed is None or state not in FINISHED:
            return
        feed.state = state
        if feed.local and feed.final is None:
            feed.finish_local(state)
            self._pump(feed)

    @handles(JobStates)
    def _on_states(self, msg: JobStates) -> None:
        for job, state in msg.states.items():
            self._job_state(job, state)

    @handles(TreeEvent)
    def _on_tree_event(self, msg: TreeEvent) -> None:
        event = msg.event
        kind = event.get("type")
        if kind == "status" and isinstance(event.get("job"), str) \
                and isinstance(event.get("state"), str):
            job, state = event["job"], event["state"]
            self._job_state(job, state)
            frame = None
            for conn, states in self.watches.get(msg.root, {}).values():
                known = states.get(job)
                attempt = event.get("attempt")
                seen = (int(attempt) if isinstance(attempt, int) else
                        known[0] if known else 1, state)
                if progressed(known, seen):
                    states[job] = seen
                    frame = frame or wire.status_frame(event)
                    conn.push(frame)
        elif kind == "progress" and isinstance(event.get("job"), str):
            frame = wire.progress_frame(event["job"], event.get("progress"))
            for conn, _ in self.watches.get(msg.root, {}).values():
                conn.push(frame)
        elif kind in ("graft", "rerun"):
            # Jobs were added, or went back to the start: the whole tree again, read anew.
            self.redraw.add(msg.root)
            self.lookup("snapshot", msg.root)
        elif kind == "done" and isinstance(event.get("state"), str):
            frame = wire.done_frame(msg.root, event["state"])
            for conn, _ in self.watches.get(msg.root, {}).values():
                conn.push(frame)

    @handles(Resync)
    def _on_resync(self, _msg: Resync) -> None:
        for root in self.watches:
            self.lookup("snapshot", root)

    @handles(Tick)
    def _on_tick(self, _msg: Tick) -> None:
        now = time.monotonic()
        for feed in list(self.feeds.values()):
            if not feed.subs and feed.idle_since is not None and now - feed.idle_since > LINGER:
                self._close_feed(feed)
            elif not feed.local and not feed.live and feed.final is None \
                    and now - feed.heard_at > PATIENCE:
                # The owning node accepts connections but says nothing (frozen?): a
                # viewer that asked for the log as it is now gets an answer all the same.
                waiting = [cid for cid, sub in feed.subs.items() if not sub.follow]
                self._ended(feed, feed.error("unavailable", f"node {feed.node} does not "
                                             f"answer for the log of job {feed.job}", waiting))
        pending = [j for j, f in self.feeds.items() if f.subs and f.state not in FINISHED]
        if pending:
            self.lookup("states", pending)

    # -- watches --------------------------------------------------------------------------
    @handles(WatchTree)
    def _on_watch(self, msg: WatchTree) -> None:
        if msg.conn.closed:
            return
        watchers = self.watches.setdefault(msg.root, {})
        if msg.conn.id not in watchers:
            self._ref(msg.root, 1)
        watchers[msg.conn.id] = (msg.conn, _seen(msg.status))
        msg.conn.push(wire.tree_frame(msg.status), force=True)
        # The tree's channel may not be subscribed yet: read the tree again once it is, so
        # a change made in between (not seen on the channel) is in that read.
        self.channels(msg.root, True, functools.partial(self.lookup, "snapshot", msg.root))

    @handles(TreeSnapshot)
    def _on_snapshot(self, msg: TreeSnapshot) -> None:
        fresh = _seen(msg.status)
        redraw = msg.root in self.redraw
        self.redraw.discard(msg.root)
        tree = None
        for conn, states in self.watches.get(msg.root, {}).values():
            if redraw or set(fresh) - set(states):  # jobs added, or rerun: the whole tree
                states.clear()
                states.update(fresh)
                tree = tree or wire.tree_frame(msg.status)
                conn.push(tree, force=True)
                continue
            for job, seen in fresh.items():
                if progressed(states.get(job), seen):
                    states[job] = seen
                    conn.push(wire.status_frame(find(msg.status, job) or {}))
            # Progress reported before the tree's channel was live reached nobody.
            for item in walk(msg.status):
                if item["state"] == State.RUNNING and item.get("progress"):
                    conn.push(wire.progress_frame(item["id"], item["progress"]))
        for job, (_, state) in fresh.items():
            self._job_state(job, state)

    # -- relay ---------------------------------------------------------------------------
    @handles(Relay)
    def _on_relay(self, msg: Relay) -> None:
        feed = self.feeds.get(msg.job)
        if feed is None or feed.local or feed.gen != msg.gen:
            return
        if msg.kind in (RelayKind.GREW, RelayKind.LIVE, RelayKind.END):
            feed.heard_at = time.monotonic()
        if msg.kind is RelayKind.GREW:
            feed.end = max(feed.end, msg.end)
        elif msg.kind is RelayKind.LIVE:
            feed.live = True
        elif msg.kind is RelayKind.END:
            feed.final_end, feed.state = msg.end, msg.state
        elif msg.kind is RelayKind.UP:
            return
        elif msg.kind is RelayKind.STORED:
            feed.use_stored(Path(msg.path), msg.base, msg.end, msg.state, msg.error)
        elif msg.kind in (RelayKind.DOWN, RelayKind.FATAL):
            # Every viewer gets the error, which ends its subscription (it may subscribe
            # again); the upstream goes on retrying while the feed lingers.
            feed.live = False
            self._ended(feed, feed.error("unavailable", msg.error))
            if msg.kind is RelayKind.FATAL:
                self._close_feed(feed)
            elif feed.idle_since is None:
                feed.idle_since = time.monotonic()
            return
        if feed.final is None and feed.final_end is not None and feed.end >= feed.final_end:
            feed.final = feed.state  # the owner's end, and every byte is in the spool
        self._pump(feed)
