"""Redis URLs: parsing (no server needed) and the clients connect() makes from them."""

from __future__ import annotations

import pytest
import redis
from redis.sentinel import SentinelConnectionPool

import jobgrove
from jobgrove.errors import BadRedisURLError, JobgroveError, StoreUnavailableError
from jobgrove.messaging.connection import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    connect,
    decoded,
    parse_redis_url,
    redact_url,
)
from jobgrove.messaging.urls import RedisTarget
from tests.helpers import free_port


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", RedisTarget("single", hosts=(("127.0.0.1", 6379),))),
    ("redis://localhost", RedisTarget("single", hosts=(("localhost", 6379),))),
    ("redis://h:7000/3", RedisTarget("single", hosts=(("h", 7000),), db=3)),
    ("redis://h?db=2", RedisTarget("single", hosts=(("h", 6379),), db=2)),
    ("redis://[::1]:7000/1", RedisTarget("single", hosts=(("::1", 7000),), db=1)),
    ("redis://u:p%40ss@h:1/3", RedisTarget("single", hosts=(("h", 1),), db=3, username="u",
                                           password="p@ss")),
    ("redis://:pw@h/2", RedisTarget("single", hosts=(("h", 6379),), db=2, password="pw")),
    ("REDIS://h", RedisTarget("single", hosts=(("h", 6379),))),
    ("rediss://h:6380/1?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=none",
     RedisTarget("single", hosts=(("h", 6380),), db=1, tls=True,
                 ssl_ca_certs="/etc/ca.pem", ssl_cert_reqs="none")),
    ("rediss://h", RedisTarget("single", hosts=(("h", 6379),), tls=True)),
    ("unix:///tmp/redis.sock", RedisTarget("single", unix_socket="/tmp/redis.sock")),
    ("unix://:pw@/tmp/redis.sock?db=4",
     RedisTarget("single", unix_socket="/tmp/redis.sock", db=4, password="pw")),
    ("redis+sentinel://a:26379,b:26380,[::1]:26381/mymaster/4",
     RedisTarget("sentinel", hosts=(("a", 26379), ("b", 26380), ("::1", 26381)),
                 service="mymaster", db=4)),
    ("redis+sentinel://u:s3cret@a:1/svc",
     RedisTarget("sentinel", hosts=(("a", 1),), service="svc", username="u",
                 password="s3cret")),
    ("redis+cluster://a:7000,b:7001", RedisTarget("cluster", hosts=(("a", 7000), ("b", 7001)))),
    ("redis+cluster://u:p@a:7000/", RedisTarget("cluster", hosts=(("a", 7000),), username="u",
                                                password="p")),
])
def test_good_urls(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(("url", "problem"), [
    ("", "empty"),
    ("http://h", "unknown scheme 'http://'"),
    ("localhost:6379", "no scheme"),
    ("redis://", "missing host"),
    ("redis://h:abc", "bad port 'abc'"),
    ("redis://h:0", "bad port '0'"),
    ("redis://h:70000", "bad port '70000'"),
    ("redis://h:1:2", "bad host 'h:1'"),
    ("redis://[::1/0", "bad host '[::1'"),
    ("redis://h 1", "whitespace"),
    ("redis://h/x", "bad DB number 'x'"),
    ("redis://h/-1", "bad DB number '-1'"),
    ("redis://h/1?db=2", "DB given twice"),
    ("redis://a:1,b:2", "takes one host"),
    ("redis://h?foo=1", "unknown query option 'foo'"),
    ("redis://h?db=1&db=2", "'db' given twice"),
    ("redis://h?db=", "'db' has no value"),
    ("redis://h?ssl_ca_certs=/ca.pem", "'ssl_ca_certs' needs rediss://"),
    ("rediss://h?ssl_cert_reqs=maybe", "bad ssl_cert_reqs 'maybe'"),
    ("unix://", "missing socket path"),
    ("unix://tmp/redis.sock", "not a host 'tmp'"),
    ("unix:///r.sock?db=x", "bad DB number 'x'"),
    ("redis+sentinel://a:1", "missing SERVICE"),
    ("redis+sentinel://a:1/", "missing SERVICE"),
    ("redis+sentinel://a/svc", "missing port after host 'a'"),
    ("redis+sentinel://a:1,,b:2/svc", "missing host"),
    ("redis+sentinel://a:1,b:x/svc", "bad port 'x'"),
    ("redis+sentinel://a:1/svc/x", "bad DB number 'x'"),
    ("redis+sentinel://a:1/svc/1/2", "bad path"),
    ("redis+sentinel://a:1/svc?db=1", "unknown query option 'db'"),
    ("redis+cluster://a", "missing port after host 'a'"),
    ("redis+cluster://a:1/3", "takes no DB"),
    ("redis+cluster://a:1?x=1", "unknown query option 'x'"),
    ("redis+cluster://:7000", "missing host before ':7000'"),
])
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(BadRedisURLError) as info:
        parse_redis_url(url)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message
    assert isinstance(info.value, JobgroveError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("url", [
    "redis://user:hunter2@h:xx/0",
    "redis://user:hun#ter2@h/0",
    "redis://:hunter2@h?bogus=1",
    "redis+sentinel://user:hunter2@a:1",
    "redis+cluster://user:hun/ter2@a",
    "redis://hunter2@h:0",
    "unix://:hunter2@tmp/sock",
])
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(BadRedisURLError) as info:
        parse_redis_url(url)
    assert "hunter2" not in str(info.value) and "hun" not in str(info.value)
    assert "***" in str(info.value)


def test_reprs_never_show_the_password() -> None:
    target = parse_redis_url("redis+sentinel://u:hunter2@a:1,b:2/svc/3")
    assert target.password == "hunter2"
    for text in (repr(target), str(target), target.display()):
        assert "hunter2" not in text
    assert target.display() == "redis+sentinel://u:***@a:1,b:2/svc/3"
    assert redact_url("redis://u:hunter2@h/0") == "redis://u:***@h/0"
    assert redact_url("redis://h/0") == "redis://h/0"
    assert "hunter2" not in repr(connect("redis://u:hunter2@127.0.0.1:1/0"))


def test_the_error_is_exported() -> None:
    assert "BadRedisURLError" in jobgrove.__all__
    assert jobgrove.BadRedisURLError is BadRedisURLError


def test_connect_rejects_a_bad_url_before_connecting() -> None:
    with pytest.raises(BadRedisURLError, match="missing SERVICE"):
        connect("redis+sentinel://127.0.0.1:1")


@pytest.mark.parametrize("url", ["redis://u:p@127.0.0.1:6379/3", "redis://:pw@h",
                                 "rediss://h:1/2?ssl_ca_certs=/x&ssl_cert_reqs=none",
                                 "unix:///tmp/x.sock?db=1"])
def test_single_server_clients_are_what_from_url_made(url: str) -> None:
    """connect() builds the same pool redis-py's from_url did before URLs were parsed
    here: same connection class, same settings (and so no command retries)."""
    old = redis.Redis.from_url(url, decode_responses=True, encoding_errors="replace",
                               socket_timeout=SOCKET_TIMEOUT,
                               socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=10)
    new = connect(url)
    assert type(new.connection_pool) is type(old.connection_pool)
    assert new.connection_pool.connection_class is old.connection_pool.connection_class
    # Per-pool helper objects differ by identity only; from_url leaves port/db unset
    # where the connection's defaults (6379, 0) apply.
    ignored = {"himport_registry", "maint_notifications_pool_handler",
               "maint_notifications_config"}
    defaults = {"port": 6379, "db": 0}
    old_kwargs = {k: v for k, v in old.connection_pool.connection_kwargs.items()
                  if k not in ignored}
    new_kwargs = {k: v for k, v in new.connection_pool.connection_kwargs.items()
                  if k not in ignored}
    assert new_kwargs == {**{k: v for k, v in defaults.items() if k in new_kwargs}, **old_kwargs}


def test_sentinel_client_asks_the_sentinels_for_the_primary() -> None:
    client = connect("redis+sentinel://u:pw@127.0.0.1:1,127.0.0.1:2/svc/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "svc" and pool.is_master
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (2, "u", "pw")
    assert kwargs["decode_responses"] is True and kwargs["encoding_errors"] == "replace"
    assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
    assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
    sentinels = pool.sentinel_manager.sentinels
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs[
        "port"]) for s in sentinels] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    # The sentinels themselves get no credentials (they authenticate separately).
    assert sentinels[0].connection_pool.connection_kwargs["password"] is None


def test_decoded_keeps_a_sentinel_client_on_its_service() -> None:
    client = connect("redis+sentinel://127.0.0.1:1/svc/2")
    assert decoded(client) is client
    raw = redis.Redis(connection_pool=SentinelConnectionPool(
        "svc", client.connection_pool.sentinel_manager, db=2))
    twin = decoded(raw)
    assert isinstance(twin.connection_pool, SentinelConnectionPool)
    assert twin.connection_pool.service_name == "svc"
    assert twin.connection_pool.connection_kwargs["decode_responses"] is True
    assert twin.connection_pool.connection_kwargs["db"] == 2


def test_a_cluster_client_without_a_reachable_seed_is_unavailable() -> None:
    """The cluster client reads the slot map when made: no seed answering is an outage
    (StoreUnavailableError, exit 3), named without the password."""
    url = f"redis+cluster://u:hunter2@127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailableError, match="Redis Cluster unavailable") as info:
        connect(url)
    assert "hunter2" not in str(info.value)
