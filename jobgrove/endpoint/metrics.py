"""``GET /metrics``: a node's numbers in Prometheus text format (prometheus_client).

One collector per endpoint, in a registry of its own (several nodes may share a
process), reading everything at scrape time: the node's ``NodeStats`` (counted by its
actors), the endpoint's own viewers and relays, and two cluster-wide figures read from
Redis (trees stored, deletions under way). Served behind the same auth as the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from jobgrove._version import __version__
from jobgrove.actors.stats import BUCKETS, NodeStats

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclasses.dataclass(frozen=True)
class EndpointView:
    """What the endpoint itself knows at scrape time."""

    viewers: int  # websocket connections open
    relays: int  # logs of other nodes relayed now
    dropped: int  # viewers dropped as too slow, since start
    refused: int  # connections refused over the cap, since start
    redis_ok: bool  # the endpoint's own ping
    #: Cluster-wide, read from Redis now: (trees stored, deletions under way), or None.
    trees: tuple[int, int] | None


class NodeCollector(Collector):
    def __init__(self, node: str, stats: NodeStats | None,
                 view: Callable[[], EndpointView]) -> None:
        self.node = node
        self.stats = stats
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view()
        yield _gauge("jobgrove_node_info", "This node: its name and jobgrove version "
                     "(always 1).", 1, {"node": self.node, "version": __version__})
        yield _gauge("jobgrove_viewers", "Websocket viewers connected to this node now.",
                     view.viewers)
        yield _gauge("jobgrove_relayed_logs", "Logs of other nodes this node relays now.",
                     view.relays)
        yield _counter("jobgrove_viewers_dropped_total", "Viewers dropped as too slow.",
                       view.dropped)
        yield _counter("jobgrove_connections_refused_total",
                       "Connections refused over the connection cap.", view.refused)
        if view.trees is not None:
            yield _gauge("jobgrove_trees_stored", "Trees in Redis (cluster-wide; every node "
                         "reports the same).", view.trees[0])
            yield _gauge("jobgrove_trees_deleting", "Tree deletions begun and not finished "
                         "(cluster-wide; finished by the next delete or prune).", view.trees[1])
        stats = self.stats
        if stats is None:
            yield _gauge("jobgrove_redis_up", "1 while Redis answers this node.",
                         int(view.redis_ok))
            return
        snap = stats.snapshot()
        yield _gauge("jobgrove_redis_up", "1 while Redis answers this node.",
                     int(view.redis_ok and snap.redis_up))
        yield _gauge("jobgrove_slots", "Jobs this node may run at once (--concurrency).",
                     snap.concurrency)
        yield _gauge("jobgrove_jobs_running", "Jobs running on this node now (undo hooks "
                     "included).", snap.running)
        yield _gauge("jobgrove_outbox_length", "Job outcomes waiting to be recorded in Redis "
                     "(grows while Redis is unavailable).", snap.outbox)
        yield _counters("jobgrove_jobs_finished_total", "Jobs this node ran whose outcome "
                        "Redis recorded, by final state and kind.", ["state", "kind"],
                        {(state, kind): n for (state, kind), n in snap.finished.items()})
        durations = HistogramMetricFamily(
            "jobgrove_job_duration_seconds", "How long the code of jobs run here ran, by "
            "kind.", labels=["kind"])
        for kind, hist in sorted(snap.durations.items()):
            cumulative, buckets = 0, []
            for bound, n in zip([*map(_le, BUCKETS), "+Inf"], hist.counts):
                cumulative += n
                buckets.append((bound, cumulative))
            durations.add_metric([kind], buckets, sum_value=hist.total)
        yield durations
        yield _counters("jobgrove_outcomes_refused_total", "Outcomes Redis did not apply: "
                        "stale (the job had ended already), fenced (this process lost its "
                        "node name), error.", ["verdict"],
                        {(verdict,): n for verdict, n in snap.refused.items()})
        yield _counter("jobgrove_claims_total", "Jobs this node claimed (WAITING -> "
                       "RUNNING).", snap.claims)
        yield _counter("jobgrove_reconciliations_total", "Times this node re-read every tree "
                       "it has jobs in.", snap.reconciliations)
        yield _counter("jobgrove_redis_outages_total", "Times this node found Redis "
                       "unavailable.", snap.redis_outages)
        yield _counter("jobgrove_retention_runs_total", "Retention passes this node ran.",
                       snap.prune_runs)
        yield _counter("jobgrove_retention_deleted_trees_total", "Trees this node deleted "
                       "by retention.", snap.pruned_trees)
        yield _gauge("jobgrove_retention_last_run_timestamp_seconds", "When this node last "
                     "ran a retention pass (unix time; 0: never).", snap.last_prune)
        yield _counter("jobgrove_log_files_removed_total", "Log files of deleted trees this "
                       "node removed.", snap.log_files_removed)
        yield _gauge("jobgrove_node_start_time_seconds", "When this node started (unix "
                     "time).", snap.started)


def _le(bound: float) -> str:
    return f"{bound:g}" if bound < 1e6 else repr(bound)


def _gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None
           ) -> GaugeMetricFamily:
    if labels is None:
        return GaugeMetricFamily(name, doc, value=value)
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _counters(name: str, doc: str, labels: list[str],
              values: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    """One counter per combination of label values (sorted, so the text is stable)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class Metrics:
    """The registry of one endpoint; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, node: str, stats: NodeStats | None,
                 view: Callable[[], EndpointView]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node, stats, view))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
