"""Prometheus numbers about pushes that live in the database (sync runs, pending generations, cluster health, the
broker's queue), so every web process reports the same values. Registered through settings.METRICS_COLLECTORS."""

from __future__ import annotations

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily

from apps.clusters.models import Cluster, SyncRun
from apps.core.observability import broker_queue_depth


class ClusterCollector:
    """Numbers that live in the database, so every web process reports the same values."""

    def describe(self):
        return []  # collected lazily: the database is not ready when the module is imported

    def collect(self):
        runs = GaugeMetricFamily(
            "controlplane_sync_runs", "Sync runs by cluster and state", labels=["cluster", "state"]
        )
        for name, state, n in _counts(SyncRun, "cluster__name", "state"):
            runs.add_metric([name, state], n)
        yield runs
        lag = GaugeMetricFamily(
            "controlplane_pending_generations", "Desired config generations not yet pushed", labels=["cluster"]
        )
        healthy = GaugeMetricFamily(
            "controlplane_cluster_healthy", "1 when the last observation reached Ray", labels=["cluster"]
        )
        clusters = Cluster.objects.select_related("push_state").only(
            "name", "desired_generation", "health", "push_state__pushed_generation"
        )
        for c in clusters:
            lag.add_metric([c.name], c.desired_generation - c.push_state.pushed_generation)
            healthy.add_metric([c.name], 1 if c.health == Cluster.Health.HEALTHY else 0)
        yield lag
        yield healthy
        depth = GaugeMetricFamily("controlplane_queue_depth", "Messages waiting in the Celery broker queue")
        queued = broker_queue_depth()
        if queued is not None:
            depth.add_metric([], queued)
            yield depth


def _counts(model, *fields):
    return [(*(row[f] for f in fields), row["n"]) for row in model.objects.values(*fields).annotate(n=Count("id"))]
