"""Where a cluster's Ray series are read: the one switch on ``MetricsConfig.metrics_source``.

``sources_for(clusters)`` gives each cluster its reader: the embedded store (the points the control plane scraped
into its database; one reader serves every embedded cluster of a call, so it asks the database once per window, not
once per cluster) or the cluster's Prometheus (PromQL through ``prom``). Both answer the same few reads with the
same meaning:

- ``series``: a chart's derived series (``selectors.SERIES``) over a window;
- ``residency``: which replicas hold which models now;
- ``window``: per label group, the increase of counters (or the peak of gauges) over the last ``window_s`` seconds,
  with since when the window is covered by data (no verdict is drawn from missing data).

The control plane's own series (allocation, showback) are always in the embedded store, whatever the source.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Min, Sum, prefetch_related_objects

from apps.clusters.models import Cluster

from . import prom
from .models import Point, ScrapeRun, Series
from .selectors import RAY_SERIES, GpuUse, app_gpu_use, stored, stored_residency

__all__ = ["GpuUse", "app_gpu_use"]  # the control plane's own record of real GPU use, whatever the source

# The counters and gauges the alerts read, by their Prometheus names (the embedded store keeps counters without
# "_total").
HTTP_REQUESTS = prom.HTTP_REQUESTS
HTTP_LATENCY = prom.HTTP_LATENCY
HANDLE_REQUESTS = prom.HANDLE_REQUESTS
MUX_REQUESTS = prom.MUX_REQUESTS
MUX_LOADS = prom.MUX_LOADS
MUX_RESIDENT = prom.MUX_RESIDENT
MUX_MODEL_ID = prom.MUX_MODEL_ID
SourceUnavailable = prom.SourceUnavailable


def is_remote(cluster: Cluster) -> bool:
    """Whether Ray's series of this cluster are read from its Prometheus (the one place the field is tested)."""
    return cluster.metrics_config.is_remote


@dataclass
class Window:
    """What a source knows of one window: since when it has data (None: none), and the sums or peaks by family
    and label group."""

    covered: datetime | None
    sums: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    slack: timedelta = timedelta(seconds=60)  # how late data may start and still cover the window

    def covers(self, start: datetime) -> bool:
        return self.covered is not None and self.covered <= start + self.slack


class Embedded:
    """The embedded store, for any number of clusters at once."""

    remote = False
    label = ""

    def __init__(self, clusters: Iterable[Cluster]) -> None:
        self.clusters = {c.pk: c for c in clusters}
        self._coverage: dict[datetime, dict[int, datetime]] = {}
        self._aggregates: dict[tuple, dict[int, float]] = {}
        self._series: dict[tuple[str, ...], list[dict]] = {}

    def residency(self, application: str | None = None) -> list[dict]:
        return stored_residency(list(self.clusters.values()), application)

    def window(
        self,
        cluster: Cluster,
        families: list[str],
        window_s: float,
        by: tuple[str, ...],
        now: datetime,
        how: str = "increase",
    ) -> Window | None:
        start = now - timedelta(seconds=window_s)
        covered = self._covered(start, now).get(cluster.pk)
        names = [f.removesuffix("_total") for f in families]
        values = self._aggregate(tuple(names), window_s, now, how)
        out: dict[str, dict[tuple[str, ...], float]] = {}
        for family, name in zip(families, names, strict=True):
            groups: dict[tuple[str, ...], float] = defaultdict(float)
            for s in self._series_of(tuple(names)):
                if s["cluster_id"] != cluster.pk or s["name"] != name or s["pk"] not in values:
                    continue
                key = tuple(s["labels"].get(k, "") for k in by)
                v = values[s["pk"]]
                groups[key] = max(groups.get(key, v), v) if how == "max" else groups[key] + v
            out[family] = dict(groups)
        return Window(covered, out, timedelta(seconds=60))

    def _covered(self, start: datetime, now: datetime) -> dict[int, datetime]:
        """Per cluster still scraped (a scrape in the last 5 minutes): its earliest successful scrape since a little
        before start."""
        if start not in self._coverage:
            rows = (
                ScrapeRun.objects.filter(cluster_id__in=list(self.clusters), finished_at__isnull=False, samples__gt=0)
                .filter(started_at__gte=start - timedelta(minutes=5))
                .values("cluster_id")
                .annotate(first=Min("started_at"), last=Max("started_at"))
            )
            self._coverage[start] = {
                r["cluster_id"]: r["first"] for r in rows if r["last"] >= now - timedelta(minutes=5)
            }
        return self._coverage[start]

    def _series_of(self, names: tuple[str, ...]) -> list[dict]:
        if names not in self._series:
            self._series[names] = list(
                Series.objects.filter(cluster_id__in=list(self.clusters), name__in=names).values(
                    "pk", "cluster_id", "name", "labels"
                )
            )
        return self._series[names]

    def _aggregate(self, names: tuple[str, ...], window_s: float, now: datetime, how: str) -> dict[int, float]:
        """Series id -> sum (counters' deltas) or peak of its points in the window: one query per window and family
        set for every cluster of the call."""
        key = (names, window_s, how)
        if key not in self._aggregates:
            resolution = Point.RAW if window_s <= 20 * 3600 else Point.MINUTE
            rows = (
                Point.objects.filter(
                    series__cluster_id__in=list(self.clusters),
                    series__name__in=names,
                    resolution=resolution,
                    ts__gte=now - timedelta(seconds=window_s),
                )
                .values("series_id")
                .annotate(v=(Max if how == "max" else Sum)("value"))
            )
            self._aggregates[key] = {r["series_id"]: r["v"] for r in rows}
        return self._aggregates[key]


class Prometheus:
    """A cluster's Prometheus (or any PromQL-compatible endpoint)."""

    remote = True
    label = "Prometheus"

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def series(self, name: str, window: prom.Window, now: datetime, application: str | None = None) -> list[dict]:
        if name == "gpu_allocated":
            # Allocation from placement is the control plane's own: Ray's ray_resources only where it is missing.
            placed = stored(
                name,
                cluster=[self.cluster],
                start=window.start,
                end=window.end,
                step=window.step,
                now=now,
                placed_only=True,
            )
            if placed:
                return placed
        return prom.series(self.cluster, name, window, application=application)

    def residency(self, application: str | None = None) -> list[dict]:
        return prom.residency(self.cluster, application)

    def window(
        self,
        cluster: Cluster,
        families: list[str],
        window_s: float,
        by: tuple[str, ...],
        now: datetime,
        how: str = "increase",
    ) -> Window | None:
        try:
            return Window(
                prom.covered_since(cluster, window_s, now),
                {f: prom.window_sums(cluster, f, window_s, now, by, how) for f in families},
                timedelta(seconds=120),  # Prometheus' coverage is read to the minute
            )
        except prom.SourceUnavailable:
            return None


def sources_for(clusters: Iterable[Cluster]) -> dict[int, Any]:
    """Each cluster's reader; the embedded clusters share one (it reads them together)."""
    clusters = list({c.pk: c for c in clusters}.values())
    prefetch_related_objects([c for c in clusters if "metrics_config" not in c._state.fields_cache], "metrics_config")
    embedded = Embedded([c for c in clusters if not is_remote(c)])
    return {c.pk: Prometheus(c) if is_remote(c) else embedded for c in clusters}


def source_for(cluster: Cluster) -> Any:
    return sources_for([cluster])[cluster.pk]


def query(
    name: str,
    *,
    cluster: Cluster | list[Cluster],
    start: datetime,
    end: datetime,
    step: int,
    now: datetime,
    application: str | None = None,
    team: str | None = None,
) -> list[dict[str, Any]]:
    """The named derived series (``selectors.SERIES``) of one cluster or several, each from its source. Raises
    SourceUnavailable when a cluster's Prometheus does not answer."""
    clusters = cluster if isinstance(cluster, list) else [cluster]
    readers = sources_for(clusters) if name in RAY_SERIES else {}
    remote = [c for c in clusters if c.pk in readers and readers[c.pk].remote]
    if not remote:
        return stored(
            name, cluster=cluster, start=start, end=end, step=step, now=now, application=application, team=team
        )
    local = [c for c in clusters if c not in remote]
    out = (
        stored(name, cluster=local, start=start, end=end, step=step, now=now, application=application) if local else []
    )
    window = prom.Window(start, end, max(step, 15))
    for c in remote:
        out += readers[c.pk].series(name, window, now, application)
    return out


def residency(cluster: Cluster | list[Cluster], application: str | None = None) -> list[dict[str, Any]]:
    """Which replicas hold which models now, each cluster from its source (one that does not answer is left out:
    its charts say why)."""
    clusters = cluster if isinstance(cluster, list) else [cluster]
    out: list[dict[str, Any]] = []
    for reader in {id(r): r for r in sources_for(clusters).values()}.values():
        try:
            out += reader.residency(application)
        except SourceUnavailable:
            continue
    return sorted(out, key=lambda r: (r.get("application", ""), r.get("model_id", ""), r.get("replica", "")))
