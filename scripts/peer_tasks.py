"""The no-op task that scripts/bench_peers runs on RQ and on Celery (not a test).

Imported by name by the peers' workers (`rq worker` resolves "peer_tasks.noop",
`celery -A peer_tasks worker` loads ``app``), so scripts/bench_peers starts them with
this folder on PYTHONPATH, and the Redis URL in JOBGROVE_BENCH_REDIS.
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("JOBGROVE_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def noop() -> None:
    """Every job of every workload, on every system: does nothing, returns None."""
    return None


app = Celery("peer_tasks", broker=REDIS_URL, backend=REDIS_URL)
# Celery's defaults otherwise (prefetch multiplier 4, acks on receipt, JSON, results
# stored in Redis: a chord needs them); this one only silences a warning at start.
app.conf.broker_connection_retry_on_startup = True
# The same function as a Celery task; ``noop`` itself stays the plain function RQ calls.
celery_noop = app.task(name="peer_tasks.noop")(noop)
