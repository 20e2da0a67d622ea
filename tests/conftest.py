"""Shared fixtures. Integration tests use a private redis-server started here (never
the machine's own Redis); fakeredis only serves the embedded-mode and unit tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from jobgrove import Client, Node
from jobgrove.messaging.connection import fake_client, fake_server
from tests.helpers import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; each test gets it flushed."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:  # a test stopped it
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill, pause and restart freely."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """Like ``own_redis``, but the data survives stop()/start() (append-only, fsync always)."""
    server = RedisServer(durable=True)
    server.start()
    yield server
    server.close()


@pytest.fixture
def fake() -> Any:
    """An in-process fakeredis server (embedded mode)."""
    return fake_server()


@pytest.fixture(params=["redis", "fakeredis"])
def backend(request: pytest.FixtureRequest) -> Any:
    """A Redis connection target for contract tests run against both adapters:
    a URL of the private redis-server, or a fakeredis client."""
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return fake_client(fake_server())


@pytest.fixture
def cluster(tmp_path: Any) -> Iterator[Any]:
    """Real node processes (``tests.cluster.Cluster``), all stopped at teardown."""
    from tests.cluster import running_cluster

    with running_cluster(tmp_path) as c:
        yield c


@pytest.fixture(scope="session")
def browser() -> Iterator[str]:
    """A headless Chromium (tests.browser), one for the session; yields its DevTools HTTP
    address."""
    from tests.browser import chromium

    with chromium() as devtools:
        yield devtools


@pytest.fixture
def log_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="jobgrove-logs-") as path:
        yield path


@pytest.fixture
def nodes(log_dir: str) -> Iterator[Any]:
    """Factory of in-process nodes, all stopped at teardown."""
    started: list[Node] = []

    def make(name: str, redis: Any, **kwargs: Any) -> Node:
        kwargs.setdefault("log_dir", f"{log_dir}/{name}")
        kwargs.setdefault("abort_grace", 3.0)
        node = Node(name, redis=redis, **kwargs).start()
        started.append(node)
        return node

    yield make
    for node in reversed(started):
        node.stop(graceful=False)


@pytest.fixture
def client_for() -> Any:
    def make(redis: Any) -> Client:
        return Client(redis)

    return make


@pytest.fixture
def sentinel_setup() -> Iterator[Any]:
    """A real Sentinel setup (``tests.servers.SentinelSetup``): primary, replica, three
    sentinels; ``.url`` is its redis+sentinel:// URL. Killed and removed at teardown."""
    from tests.servers import SentinelSetup

    with SentinelSetup() as setup:
        yield setup


@pytest.fixture
def cluster_setup(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A real 3-primary Redis Cluster (``tests.servers.ClusterSetup``); ``.url`` is its
    redis+cluster:// URL. Replicas per primary: 0, or indirect parametrization
    (``@pytest.mark.parametrize("cluster_setup", [1], indirect=True)``)."""
    from tests.servers import ClusterSetup

    with ClusterSetup(replicas=getattr(request, "param", 0)) as setup:
        yield setup


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Any]:
    """One 3-primary Redis Cluster for every test of the session that only needs a
    healthy one (``flushed_url`` empties it per test); started on first use."""
    from tests.servers import ClusterSetup

    with ClusterSetup() as setup:
        yield setup


@pytest.fixture(scope="session")
def shared_sentinel() -> Iterator[Any]:
    """One Sentinel setup for every test of the session that never fails it over."""
    from tests.servers import SentinelSetup

    with SentinelSetup() as setup:
        yield setup


def flushed_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the shared ``cluster`` or ``sentinel`` setup, emptied (the private
    redis-server's URL for ``redis``)."""
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    from jobgrove.messaging.connection import connect

    setup = request.getfixturevalue(f"shared_{kind}")
    client = connect(setup.url)
    client.flushall()
    client.close()
    return str(setup.url)
