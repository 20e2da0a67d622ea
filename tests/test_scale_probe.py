"""Exploratory probe for issue 11: Sentinel behaviours that take long to show (the
split brain of a paused primary lasts about 10 s), kept out of the suite.

Skipped unless JOBGROVE_SCALE_PROBE=1. Run with

    JOBGROVE_SCALE_PROBE=1 .venv/bin/python -m pytest -q tests/test_scale_probe.py

What the probe found on Redis Cluster and Sentinel is now built and tested in the suite
(tests/test_scale_store.py, test_scale_nodes.py, test_scale_failover.py); docs/scaling.md
describes it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from jobgrove import Client, StoreUnavailableError
from jobgrove.messaging.connection import connect
from tests.helpers import wait_for
from tests.runtime_helpers import REC, rec  # noqa: F401  (rec: no job runs twice)
from tests.servers import HOST, SentinelSetup, env_flag

pytestmark = [
    pytest.mark.skipif(not env_flag("JOBGROVE_SCALE_PROBE"),
                       reason="exploratory; set JOBGROVE_SCALE_PROBE=1"),
    pytest.mark.redis, pytest.mark.timeout(120)]


# -- a node and a client -------------------------------------------------------------------
def step(title: str, node: str, *children: dict[str, Any], gate: str | None = None
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"kind": "jgt-step", "title": title, "node": node,
                            "params": {"gate": gate} if gate else {}}
    if children:
        spec["children"] = list(children)
    return spec


def _finished(client: Client, root: str) -> dict[str, Any] | None:
    try:
        return client.status(root) if client.store.tree_finished(root) else None
    except StoreUnavailableError:
        return None


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_tree_across_a_sentinel_failover(how: str, sentinel_setup: SentinelSetup,
                                           nodes: Any) -> None:
    """Kill -9 (or SIGSTOP, then SIGCONT once the replica is promoted: the old primary
    takes writes until it is demoted) the primary while jobs run. The rec fixture fails
    the test if a job's code ran twice."""
    setup = sentinel_setup
    nodes("n1", setup.url, lease=2.0)
    nodes("n2", setup.url, lease=2.0)
    client = Client(setup.url)
    root = client.submit(step("root", "n1", step("held1", "n1", gate="g"),
                              step("held2", "n2", gate="g"), step("quick", "n2")))
    wait_for(lambda: len(REC.now_running("n1")) + len(REC.now_running("n2")) == 2,
             timeout=10, what="the held jobs")
    setup.wait_replicated()
    stopped_at = time.monotonic()
    setup.primary.kill() if how == "kill" else setup.primary.pause()
    setup.wait_for_failover(setup.primary, timeout=15)
    promoted = time.monotonic() - stopped_at
    if how == "pause":
        setup.primary.resume()  # comes back as a primary until the sentinels demote it
        wait_for(lambda: setup.primary.info("replication").get("role") == "slave",
                 timeout=15, what="the old primary demoted")
    REC.open("g")
    status = wait_for(lambda: _finished(client, root), timeout=30,
                      what="the tree to finish after the failover")
    print(f"\nsentinel failover ({how}): replica promoted after {promoted:.1f}s, tree "
          f"{status['state']} {time.monotonic() - stopped_at:.1f}s after the {how}; "
          f"states {sorted(j['state'] for j in [status, *status['children']])}")
    assert status["state"] == "SUCCESS"


def test_scripts_after_a_sentinel_failover(sentinel_setup: SentinelSetup) -> None:
    """Redis 7 replicates scripts as effects, not the script cache: after a failover
    the new primary answers EVALSHA with NOSCRIPT until the script is loaded again."""
    client = connect(sentinel_setup.url)
    sha = client.script_load("return 1")
    sentinel_setup.wait_replicated()
    sentinel_setup.primary.kill()
    sentinel_setup.wait_for_failover(sentinel_setup.primary, timeout=15)

    def evalsha() -> str | None:
        try:
            client.evalsha(sha, 0)
        except redis.exceptions.NoScriptError:
            return "NOSCRIPT"
        except (redis.ConnectionError, redis.TimeoutError):
            return None
        return "ran"

    assert wait_for(evalsha, timeout=10, what="the new primary") == "NOSCRIPT"


def test_a_resumed_old_primary_takes_writes_until_demoted(
        sentinel_setup: SentinelSetup) -> None:
    """Split brain: connections made before a pause stay with the old primary. Once it
    is resumed it takes writes (it still believes it is the primary) until the sentinels
    demote it, about 10 s later (their INFO period for replicas); those writes are lost."""
    setup = sentinel_setup
    client = connect(setup.url)
    client.set("k", "before")
    setup.wait_replicated()
    setup.primary.pause()
    setup.wait_for_failover(setup.primary, timeout=15)
    setup.primary.resume()
    assert client.set("k", "into the void")  # acknowledged, by the old primary
    assert client.connection_pool.master_address == (HOST, setup.primary.port)
    resumed_at = time.monotonic()
    wait_for(lambda: setup.primary.info("replication").get("role") == "slave", timeout=20,
             what="the old primary demoted")
    print(f"\nold primary demoted {time.monotonic() - resumed_at:.1f}s after it came back")
    assert wait_for(lambda: answers(client, "k"), timeout=10, what="the new primary") == "before"


def answers(client: Any, key: str) -> str | None:
    try:
        return str(client.get(key))
    except (redis.ConnectionError, redis.TimeoutError):
        return None
