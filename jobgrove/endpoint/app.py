"""The node endpoint: HTTP + websocket server, log broadcast, relay and tree watch.

``Endpoint`` is what a node runs on its ``--listen`` port. It owns its threads: the
server's (see ``ws_server``), the log-broadcast actor, one Redis pub/sub listener for
the channels of watched trees, one lookup thread for every Redis read the actor needs
(so a slow Redis never stalls log delivery), and one relay thread per job of another
node that someone here follows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

from jobgrove.actors.messages import (
    Resync,
    SubscribeLog,
    TreeEvent,
    UnsubscribeLog,
    UnwatchTree,
    ViewerClosed,
    ViewerDrained,
    WatchTree,
)
from jobgrove.actors.stats import NodeStats
from jobgrove.core.ids import is_job_id
from jobgrove.endpoint import api, auth, wire
from jobgrove.endpoint.api import as_json, refusal
from jobgrove.endpoint.broadcast import LogBroadcast
from jobgrove.endpoint.connection import Connection
from jobgrove.endpoint.feeds import GrowthGate
from jobgrove.endpoint.http import Limits, Request, Response
from jobgrove.endpoint.lookups import Lookups
from jobgrove.endpoint.metrics import CONTENT_TYPE as METRICS_TYPE
from jobgrove.endpoint.metrics import EndpointView, Metrics
from jobgrove.endpoint.relay import Upstream
from jobgrove.endpoint.server import WsServer
from jobgrove.endpoint.stored import fallback
from jobgrove.errors import (
    AmbiguousIdError,
    ConfigError,
    JobgroveError,
    StoreUnavailableError,
    UnknownJobError,
)
from jobgrove.messaging.pubsub import Listener
from jobgrove.messaging.registry import Registry
from jobgrove.messaging.retention import tree_counts
from jobgrove.messaging.store import Store

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_SUBSCRIPTIONS = 64  # per connection
MAX_WATCHES = 16  # per connection


@dataclasses.dataclass
class _Session:
    """What one websocket viewer has asked for (to enforce the per-connection caps)."""

    subs: set[str] = dataclasses.field(default_factory=set)
    watches: set[str] = dataclasses.field(default_factory=set)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise JobgroveError(f"--listen must be HOST:PORT, got {listen!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _check_host(host: str, port: int) -> None:
    try:
        socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {host!r} is not an address or "
                          f"a host name this machine can resolve ({exc})") from None


class Endpoint:
    """A node's HTTP/websocket endpoint. ``start()`` binds (port 0: any free port, see
    ``address``); ``on_log_growth`` is the node's JobLog growth callback."""

    def __init__(self, *, node_name: str, store: Store, registry: Registry, log_dir: str,
                 listen: str, secret: bytes | None = None, allowed_origins: Any = (),
                 running_count: Callable[[], int | None] | None = None,
                 limits: Limits | None = None, max_relays: int = 64,
                 stats: NodeStats | None = None) -> None:
        self.node_name = node_name
        self.store = store
        self.registry = registry
        self.log_dir = log_dir
        self.host, self.port = parse_listen(listen)
        self.secret = secret
        self.allowed_origins = tuple(allowed_origins)
        self.running_count = running_count
        self.limits = limits or Limits()
        self.max_relays = max_relays
        self.redis_ok = True
        self.gate = GrowthGate()
        self.server: WsServer | None = None
        self.actor: pykka.ActorRef[Any] | None = None
        self._listener: Listener | None = None
        self._lookups: Lookups | None = None
        self._spool: str | None = None
        self._sessions: dict[int, _Session] = {}
        self._upstreams: set[Upstream] = set()
        self._stopped = False
        self.metrics = Metrics(node_name, stats, self._metrics_view)

    @property
    def address(self) -> str:
        if self.server is None:
            return f"{self.host}:{self.port}"
        host, port = self.server.address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def on_log_growth(self, job_id: str, size: int) -> None:
        self.gate.notify(job_id, size)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> None:
        host = self.host
        if self.secret is None and not auth.is_loopback_host(host):
            _check_host(host, self.port)  # a typo is an error, not a silent loopback
            log.warning("no cluster secret: binding 127.0.0.1:%d only instead of %s "
                        "(pass --secret-file to serve other hosts)", self.port, host)
            host = "127.0.0.1"
        # An address that cannot be bound is a ConfigError saying how to fix it.
        self.server = WsServer(host, self.port, self, limits=self.limits,
                               name=f"jg-http-{self.node_name}", reserved=("/health",))
        self._spool = tempfile.mkdtemp(prefix=f"jobgrove-relay-{self.node_name}-")
        self._lookups = Lookups(self.store, self._tell, self._set_redis_ok,
                                name=f"jg-lookups-{self.node_name}")
        keys = self.store.keys
        self.actor = LogBroadcast.start(
            self.node_name, self.log_dir, self._spool, self.gate, self._start_upstream,
            self._channel, self._lookups.request, self.max_relays)
        actor = self.actor
        prefix = keys.tree_channel("")

        def on_message(channel: str, payload: dict[str, Any]) -> None:
            if channel.startswith(prefix):
                actor.tell(TreeEvent(channel[len(prefix):], payload))

        def on_up() -> None:
            self.redis_ok = True
            actor.tell(Resync())

        def on_down(_err: str) -> None:
            self.redis_ok = False

        self._listener = Listener(self.store, [keys.endpoint_channel(self.node_name)],
                                  on_message, on_up, on_down,
                                  name=f"jg-pubsub-{self.node_name}")
        self._listener.start()
        self._lookups.start()
        self.server.start()
        log.info("node %s serves http://%s/ (websocket /ws)%s", self.node_name, self.address,
                 "" if self.secret else "; no cluster secret: loopback only, no tokens")

    def stop(self, timeout: float = 5.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.server is not None:
            self.server.stop(timeout)
        for upstream in list(self._upstreams):
            upstream.stop()
        if self.actor is not None:
            with contextlib.suppress(pykka.Timeout):
                self.actor.stop(block=True, timeout=timeout)
        if self._listener is not None:
            self._listener.stop(timeout)
        if self._lookups is not None:
            self._lookups.stop(timeout)
        for upstream in list(self._upstreams):
            upstream.join(timeout)
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)

    def _set_redis_ok(self, ok: bool) -> None:
        self.redis_ok = ok

    def _channel(self, root: str, on: bool, on_live: Callable[[], None] | None) -> None:
        if self._listener is None:
            return
        channel = self.store.keys.tree_channel(root)
        if on:
            self._listener.subscribe(channel, on_live)
        else:
            self._listener.unsubscribe(channel)

    # -- relay ----------------------------------------------------------------------------
    def _start_upstream(self, actor: pykka.ActorRef[Any], job: str, node: str, offset: int,
                        spool: Path, gen: int) -> Upstream:
        self._upstreams = {u for u in self._upstreams if u.is_alive()}
        upstream = Upstream(actor, job, node, offset, spool, gen, address=self._address_of,
                            token=self._node_token, name=f"jg-relay-{self.node_name}",
                            fallback=functools.partial(fallback, self.store, self.registry))
        self._upstreams.add(upstream)
        upstream.start()
        return upstream

    def _address_of(self, node: str) -> str | None:
        record = self.registry.record(node) or {}
        address = record.get("address")
        return address if isinstance(address, str) and address else None

    def _node_token(self) -> str | None:
        if self.secret is None:
            return None
        return auth.mint_token(self.secret, auth.NODE_TTL, subject="node")

    def _metrics_view(self) -> EndpointView:
        server = self.server
        try:
            trees: tuple[int, int] | None = tree_counts(self.store)
        except StoreUnavailableError:
            trees = None
        return EndpointView(
            viewers=len(server.connections) if server else 0,
            relays=sum(1 for u in list(self._upstreams) if u.is_alive()),
            dropped=server.dropped if server else 0, refused=server.refused if server else 0,
            redis_ok=self.redis_ok, trees=trees)

    # -- HTTP -----------------------------------------------------------------------------
    def check(self, request: Request, upgrade: bool) -> Response | None:
        host = request.header("host") or ""
        if self.secret is None and not auth.is_loopback_host(auth.split_host(host)):
            return refusal(403, "unauthorized", "this node has no cluster secret and only "
                           "answers requests addressed to a loopback host")
        origin = request.header("origin")
        if not auth.origin_allowed(origin, host, self.allowed_origins):
            return refusal(403, "unauthorized", f"origin {origin} is not allowed")
        if self.secret is not None:
            try:
                auth.verify_token(self.secret, auth.token_of(request))
            except auth.AuthError as exc:
                return refusal(401, "unauthorized", str(exc))
        return None

    def http(self, request: Request) -> Response:
        if request.path == "/health":
            return as_json(self.health())
        if request.path == "/api/trees":
            return api.trees(self.store, self.registry, request)
        if request.path == "/api/nodes":
            return api.nodes(self.registry, request)
        if request.path == "/metrics":
            return Response(200, self.metrics.render(), METRICS_TYPE)
        static = _STATIC.get(request.path)
        if static is None:
            return refusal(404, "not_found", f"no such page: {request.path[:100]}")
        response = Response(200, (WEB_DIR / static[0]).read_bytes(), static[1])
        token = request.query.get("token")
        if self.secret is not None and token and static[0] == "index.html" \
                and auth.is_valid(self.secret, token):  # (it may not be what authenticated)
            age = max(0, auth.token_expiry(token) - int(time.time()))
            response.headers.append(("Set-Cookie", f"{auth.COOKIE}={token}; Path=/; "
                                     f"HttpOnly; SameSite=Strict; Max-Age={age}"))
        return response

    def health(self) -> dict[str, Any]:
        running: int | None = None
        if self.running_count is not None:
            try:
                count = self.running_count()
                running = None if count is None else int(count)
            except Exception:  # a busy or stopping node: report what is known
                running = None
        return {"node": self.node_name, "redis": "ok" if self.redis_ok else "unavailable",
                "running": running}

    # -- websocket --------------------------------------------------------------------------
    def opened(self, conn: Connection) -> None:
        self._sessions[conn.id] = _Session()

    def closed(self, conn: Connection) -> None:
        self._sessions.pop(conn.id, None)
        self._tell(ViewerClosed(conn))

    def drained(self, conn: Connection) -> None:
        self._tell(ViewerDrained(conn))

    def _tell(self, message: Any) -> None:
        if self.actor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self.actor.tell(message)

    def message(self, conn: Connection, data: str | bytes) -> None:
        session = self._sessions.setdefault(conn.id, _Session())
        try:
            request = self._resolved(wire.parse_request(data))
            if isinstance(request, wire.Subscribe):
                self._subscribe(conn, request, session.subs)
            elif isinstance(request, wire.Unsubscribe):
                session.subs.discard(request.job)
                self._tell(UnsubscribeLog(conn, request.job))
            elif isinstance(request, (wire.Abort, wire.Rerun)):
                conn.push(api.action(self.store, request, conn.peer))
            elif isinstance(request, wire.Watch):
                if request.tree not in session.watches \
                        and len(session.watches) >= MAX_WATCHES:
                    raise wire.WireError("bad_request", f"at most {MAX_WATCHES} watches "
                                         "per connection")
                status = self.store.tree_status(request.tree)
                session.watches.add(status["id"])
                self._tell(WatchTree(conn, status["id"], status))
            else:
                session.watches.discard(request.tree)
                with contextlib.suppress(JobgroveError):
                    self._tell(UnwatchTree(conn, self.store.resolve_root(request.tree)))
        except wire.WireError as exc:
            conn.push(exc.frame())
        except UnknownJobError as exc:
            conn.push(wire.error_frame("not_found", str(exc), job=exc.job_id))
        except StoreUnavailableError as exc:
            conn.push(wire.error_frame("unavailable", str(exc)))
        except AmbiguousIdError as exc:
            conn.push(wire.error_frame("bad_request", str(exc), job=exc.prefix))
        except JobgroveError as exc:  # a record that cannot be read (CorruptRecordError)
            conn.push(wire.error_frame("unavailable", str(exc)))

    def _resolved(self, request: wire.WsRequest) -> wire.WsRequest:
        """Ids as people type them: a prefix stands for the one id it starts (frames
        then carry the full id)."""
        if isinstance(request, (wire.Watch, wire.Unwatch)):
            tree = request.tree
            return request if is_job_id(tree) else \
                dataclasses.replace(request, tree=self.store.resolve_id(tree))
        job = request.job
        return request if is_job_id(job) else \
            dataclasses.replace(request, job=self.store.resolve_id(job))

    def _subscribe(self, conn: Connection, request: wire.Subscribe, subs: set[str]) -> None:
        if request.job not in subs and len(subs) >= MAX_SUBSCRIPTIONS:
            raise wire.WireError("bad_request", f"at most {MAX_SUBSCRIPTIONS} subscriptions "
                                 "per connection", job=request.job)
        status = self.store.job_status(request.job)
        subs.add(request.job)
        self._tell(SubscribeLog(conn, request.job, request.offset, request.follow,
                                status["root"], str(status["node"]), str(status["state"])))
