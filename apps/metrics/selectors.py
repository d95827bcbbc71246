"""Derived series for charts and the metrics API, read from the stored points at a resolution fit for the range."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Avg, Count, Min, OuterRef, Subquery

from apps.clusters.models import Cluster

from .models import Point, ScrapeRun, Series

SERIES = (
    "gpu_utilization",
    "gpu_allocated",
    "team_gpus_allocated",
    "cache_hit_rate",
    "model_loads",
    "model_load_latency_ms",
    "requests",
    "request_latency_ms",
    "models_resident",
    "app_gpu_memory_mb",
    "app_gpu_utilization",
    "gpu_memory_used_mb",
)
# Derived from Ray's metrics (read from a Prometheus where the cluster says so); the others are the control
# plane's own series (allocation from placement, showback), kept in its database whatever the source.
RAY_SERIES = frozenset(
    {
        "gpu_utilization",
        "gpu_allocated",
        "cache_hit_rate",
        "model_loads",
        "model_load_latency_ms",
        "requests",
        "request_latency_ms",
        "models_resident",
        "app_gpu_memory_mb",
        "gpu_memory_used_mb",
    }
)
# What the GPUs really hold and do, where Ray reads them through NVML (nothing on logical GPUs): per application,
# the GPU memory (MiB) its replicas' processes hold (Ray's per-process series, from either source) and their
# utilisation (percent of one GPU, summed over its processes: 100 is one whole GPU busy). Utilisation is the control
# plane's own record from the node summary: Ray's per-process utilisation series keeps its last value above 0
# while a process sits at 0%, so it cannot say "idle". Per GPU, the memory used.
GPU_USE_SERIES = ("app_gpu_memory_mb", "app_gpu_utilization", "gpu_memory_used_mb")


def resolution_for(start: datetime, end: datetime, now: datetime) -> int:
    span = end - start
    if span <= timedelta(hours=6) and start >= now - timedelta(days=1):
        return Point.RAW
    if span <= timedelta(days=7) and start >= now - timedelta(days=7):
        return Point.MINUTE
    return Point.HOUR


def _points(
    cluster: Cluster | list[Cluster],
    name: str,
    where: dict[str, str],
    start: datetime,
    end: datetime,
    resolution: int,
) -> dict[int, list[tuple[datetime, float]]]:
    on = {"cluster__in": cluster} if isinstance(cluster, list) else {"cluster": cluster}
    series = Series.objects.filter(name=name, **on, **{f"labels__{k}": v for k, v in where.items()})
    ids = {s.pk: s for s in series}
    out: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    if not ids:
        return out
    rows = Point.objects.filter(series_id__in=list(ids), resolution=resolution, ts__gte=start, ts__lt=end).values_list(
        "series_id", "ts", "value"
    )
    for sid, ts, value in rows.iterator(chunk_size=5000):
        out[sid].append((ts, value))
    out["_series"] = ids
    return out


def _bucket(ts: datetime, start: datetime, step: int) -> int:
    return int((ts - start).total_seconds() // step)


def _grid(start: datetime, end: datetime, step: int) -> list[datetime]:
    n = max(1, math.ceil((end - start).total_seconds() / step))
    return [start + timedelta(seconds=i * step) for i in range(n)]


_AGG = {"sum": sum, "avg": lambda v: sum(v) / len(v), "max": max}


def _sum_by(
    points: dict, group_labels: tuple[str, ...], start: datetime, step: int, agg: str = "sum"
) -> dict[tuple, dict[int, float]]:
    series = points.get("_series", {})
    acc: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for sid, pts in points.items():
        if sid == "_series":
            continue
        labels = series[sid].labels
        group = tuple(labels.get(k, "") for k in group_labels)
        for ts, value in pts:
            acc[group][_bucket(ts, start, step)].append(value)
    out: dict[tuple, dict[int, float]] = {}
    for group, buckets in acc.items():
        out[group] = {b: _AGG[agg](v) for b, v in buckets.items()}
    return out


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over (upper bound, cumulative count) pairs, as Prometheus computes it."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


@dataclass(frozen=True)
class _Ask:
    """One query's window and filters, as every series reader needs them."""

    cluster: Cluster | list[Cluster]
    start: datetime
    end: datetime
    step: int
    now: datetime
    resolution: int
    grid: list[datetime]
    app_filter: dict[str, str]
    team: str | None
    placed_only: bool = False

    def points(self, name: str, where: dict[str, str], resolution: int | None = None) -> dict:
        return _points(
            self.cluster, name, where, self.start, self.end, self.resolution if resolution is None else resolution
        )

    def sum_by(self, pts: dict, keys: tuple[str, ...], how: str = "sum") -> dict:
        return _sum_by(pts, keys, self.start, self.step, how)

    def emit(self, groups: dict[tuple, dict[int, float]], keys: tuple[str, ...], scale: float = 1.0) -> list[dict]:
        grid = self.grid
        return [
            {
                "labels": dict(zip(keys, group, strict=False)),
                "points": [
                    [int(grid[b].timestamp()), round(v * scale, 6)] for b, v in sorted(buckets.items()) if b < len(grid)
                ],
            }
            for group, buckets in sorted(groups.items())
        ]


def stored(
    name: str,
    *,
    cluster: Cluster | list[Cluster],
    start: datetime,
    end: datetime,
    step: int,
    now: datetime,
    application: str | None = None,
    team: str | None = None,
    placed_only: bool = False,
) -> list[dict[str, Any]]:
    """The named derived series from the embedded store: [{"labels": {...}, "points": [[unix_ts, value], ...]}].

    ``cluster`` may be a list: the series of every one of them, read in one query (a team's showback). Callers
    read through ``sources.query``, which sends Ray's series of a cluster with a Prometheus there instead.
    """
    reader = _READERS.get(name)
    if reader is None:
        raise ValueError(f"unknown series {name!r}; one of: {', '.join(SERIES)}")
    resolution = resolution_for(start, end, now)
    step = max(step, resolution or 15)
    ask = _Ask(
        cluster=cluster,
        start=start,
        end=end,
        step=step,
        now=now,
        resolution=resolution,
        grid=_grid(start, end, step),
        app_filter={"application": application} if application else {},
        team=team,
        placed_only=placed_only,
    )
    return reader(ask, name)


def _gpu_utilization(q: _Ask, name: str) -> list[dict]:
    keys = ("ip", "GpuIndex")
    return q.emit(q.sum_by(q.points("ray_node_gpus_utilization", {}), keys, "avg"), keys)


def _app_gpu_use(q: _Ask, name: str) -> list[dict]:
    """Per application: each bucket's average per process group (deployment and node), summed over the groups."""
    if name in ("app_gpu_utilization", "app_gpu_memory_held_mib"):
        family = "cp_app_gpu_utilization" if name == "app_gpu_utilization" else "cp_app_gpu_memory_mib"
        pts = q.points(family, {"team": q.team} if q.team else q.app_filter)
        return q.emit(q.sum_by(pts, ("application",), "avg"), ("application",))
    per_group = q.sum_by(
        q.points("ray_component_gpu_memory_mb", q.app_filter), ("application", "deployment", "ip"), "avg"
    )
    per_app: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for (app, _deployment, _ip), buckets in per_group.items():
        for b, v in buckets.items():
            per_app[(app,)][b] += v
    return q.emit(per_app, ("application",))


def _gpu_memory_used(q: _Ask, name: str) -> list[dict]:
    keys = ("ip", "GpuIndex")
    return q.emit(q.sum_by(q.points("ray_node_gram_used", {}), keys, "avg"), keys)


def _gpu_allocated(q: _Ask, name: str) -> list[dict]:
    # Placement-based allocation per node; Ray's ray_resources (keyed by node IP) where that is missing.
    pts = q.points("cp_node_gpus_allocated", {})
    if len(pts) > 1 or q.placed_only:
        return q.emit(q.sum_by(pts, ("node",), "avg"), ("node",)) if len(pts) > 1 else []
    pts = q.points("ray_resources", {"Name": "GPU", "State": "USED"})
    return q.emit(q.sum_by(pts, ("NodeAddress",), "avg"), ("node",))


def _team_gpus_allocated(q: _Ask, name: str) -> list[dict]:
    # The peak of each bucket: this line is read against the quota, and a bucket in which the team's replicas
    # started would otherwise show half of what they hold (0.25 of 0.5 allocated).
    pts = q.points("cp_team_gpus_allocated", {"team": q.team} if q.team else {})
    return q.emit(q.sum_by(pts, ("team",), "max"), ("team",))


def _gpu_hours(q: _Ask, name: str) -> list[dict]:
    """Showback: GPU-hours allocated per day and application; each point stands for its sampling interval."""
    day = 86400
    weight_h = (q.resolution or settings.SCRAPE_INTERVAL_S) / 3600
    pts = q.points("cp_app_gpus_allocated", {"team": q.team} if q.team else q.app_filter)
    series = pts.pop("_series", {})
    out = []
    for sid, values in sorted(pts.items(), key=lambda kv: series[kv[0]].labels.get("application", "")):
        per_day: dict[int, float] = defaultdict(float)
        for ts, v in values:
            per_day[int(ts.timestamp()) // day * day] += v * weight_h
        labels = series[sid].labels
        out.append(
            {
                "labels": {"team": labels.get("team", ""), "application": labels.get("application", "")},
                "points": [[d, round(h, 3)] for d, h in sorted(per_day.items())],
            }
        )
    return out


def _models_resident(q: _Ask, name: str) -> list[dict]:
    keys = ("application", "deployment", "replica")
    return q.emit(q.sum_by(q.points("ray_serve_num_multiplexed_models", q.app_filter), keys, "avg"), keys)


def _model_cache(q: _Ask, name: str) -> list[dict]:
    """model_loads (per minute) and cache_hit_rate (1 - loads / get_model requests)."""
    keys = ("application", "deployment")
    loads = q.sum_by(q.points("ray_serve_multiplexed_models_load_counter", q.app_filter), keys)
    if name == "model_loads":
        return q.emit(loads, keys, scale=60.0 / q.step)  # loads per minute
    reqs = q.sum_by(q.points("ray_serve_multiplexed_get_model_requests_counter", q.app_filter), keys)
    rates = {
        group: {b: 1 - loads.get(group, {}).get(b, 0.0) / r for b, r in buckets.items() if r > 0}
        for group, buckets in reqs.items()
    }
    return q.emit(rates, keys)


def _requests(q: _Ask, name: str) -> list[dict]:
    pts = q.points("ray_serve_num_http_requests", q.app_filter)
    return q.emit(q.sum_by(pts, ("application",)), ("application",), scale=1.0 / q.step)


def _latency(q: _Ask, name: str) -> list[dict]:
    """p50 and p95 from Ray's histogram buckets (model loads per deployment, HTTP requests per application)."""
    if name == "model_load_latency_ms":
        family, keys = "ray_serve_multiplexed_model_load_latency_ms_bucket", ("application", "deployment")
    else:
        family, keys = "ray_serve_http_request_latency_ms_bucket", ("application",)
    per_le = q.sum_by(q.points(family, q.app_filter), (*keys, "le"))
    grouped: dict[tuple, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for group, buckets in per_le.items():
        le = float(group[-1]) if group[-1] not in ("+Inf", "") else math.inf
        for b, count in buckets.items():
            grouped[group[:-1]][b].append((le, count))
    out = []
    grid = q.grid
    for group, buckets in sorted(grouped.items()):
        for quantile, label in ((0.5, "p50"), (0.95, "p95")):
            pts_q = [
                [int(grid[b].timestamp()), round(v, 3)]
                for b, bs in sorted(buckets.items())
                if b < len(grid) and (v := _quantile(quantile, bs)) is not None
            ]
            out.append({"labels": {**dict(zip(keys, group, strict=False)), "quantile": label}, "points": pts_q})
    return out


_READERS = {
    "gpu_utilization": _gpu_utilization,
    "gpu_allocated": _gpu_allocated,
    "app_gpu_memory_mb": _app_gpu_use,
    "app_gpu_utilization": _app_gpu_use,
    "app_gpu_memory_held_mib": _app_gpu_use,  # the control plane's own record (showback), not a chart's
    "gpu_memory_used_mb": _gpu_memory_used,
    "team_gpus_allocated": _team_gpus_allocated,
    "gpu_hours": _gpu_hours,
    "models_resident": _models_resident,
    "cache_hit_rate": _model_cache,
    "model_loads": _model_cache,
    "requests": _requests,
    "model_load_latency_ms": _latency,
    "request_latency_ms": _latency,
}


@dataclass(frozen=True)
class GpuUse:
    """An application's real GPU use over a window, from the control plane's own record (the node summary)."""

    memory_mib: float  # held, averaged over the window's samples
    utilization: float  # percent of one GPU, summed over its processes, averaged
    first: datetime  # the window's first sample
    samples: int

    def covers(self, start: datetime, slack: timedelta = timedelta(seconds=90)) -> bool:
        return self.first <= start + slack


def app_gpu_use(cluster_ids: list[int], window_s: float, now: datetime) -> dict[tuple[int, str], GpuUse]:
    """(cluster id, application) -> its GPU use over the last ``window_s``, for applications on clusters where Ray
    reads the GPUs through NVML (none on logical GPUs). Two queries, however many applications."""
    if not cluster_ids:
        return {}
    series = {
        s.pk: s
        for s in Series.objects.filter(
            cluster_id__in=cluster_ids, name__in=("cp_app_gpu_memory_mib", "cp_app_gpu_utilization")
        ).only("pk", "cluster_id", "name", "labels")
    }
    if not series:
        return {}
    resolution = Point.RAW if window_s <= 20 * 3600 else Point.MINUTE
    rows = (
        Point.objects.filter(
            series_id__in=list(series), resolution=resolution, ts__gte=now - timedelta(seconds=window_s), ts__lte=now
        )
        .values("series_id")
        .annotate(avg=Avg("value"), first=Min("ts"), n=Count("id"))
    )
    acc: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        s = series[r["series_id"]]
        key = (s.cluster_id, s.labels.get("application", ""))
        row = acc.setdefault(key, {"memory": 0.0, "utilization": 0.0, "first": r["first"], "n": r["n"]})
        row["memory" if s.name == "cp_app_gpu_memory_mib" else "utilization"] = float(r["avg"] or 0)
        row["first"], row["n"] = min(row["first"], r["first"]), min(row["n"], r["n"])
    return {k: GpuUse(v["memory"], v["utilization"], v["first"], v["n"]) for k, v in acc.items()}


def stored_residency(cluster: Cluster | list[Cluster], application: str | None = None) -> list[dict[str, Any]]:
    """Which replicas hold which models now, from the embedded store: the last value of
    ray_serve_registered_multiplexed_model_id. For one cluster or several, in four queries however many clusters,
    series and points."""
    clusters = cluster if isinstance(cluster, list) else [cluster]
    if not clusters:
        return []
    qs = Series.objects.filter(cluster__in=clusters, name="ray_serve_registered_multiplexed_model_id")
    if application:
        qs = qs.filter(labels__application=application)
    series = list(qs)
    if not series:
        return []

    newest = ScrapeRun.objects.filter(cluster=OuterRef("pk")).exclude(finished_at=None)
    latest_start = dict(
        Cluster.objects.filter(pk__in=[c.pk for c in clusters])
        .annotate(started=Subquery(newest.order_by("-started_at", "-id").values("started_at")[:1]))
        .values_list("pk", "started")
    )
    points: dict[int, list[tuple[datetime, float]]] = defaultdict(list)
    rows = Point.objects.filter(series__in=series, resolution=Point.RAW).order_by("series_id", "ts")
    for sid, ts, value in rows.values_list("series_id", "ts", "value"):
        points[sid].append((ts, value))
    out = []
    for s in series:
        started = latest_start.get(s.cluster_id)
        pts = points.get(s.pk, [])
        if started is None or not pts or pts[-1][0] < started:
            continue  # no point from the last scrape: the replica is gone
        if pts[-1][1] < 1:
            continue
        # resident since the first point after the last time it was not loaded
        since = max((i for i, (_, v) in enumerate(pts) if v < 1), default=-1)
        out.append({**s.labels, "resident_since": pts[since + 1][0].isoformat()})
    return sorted(out, key=lambda r: (r.get("application", ""), r.get("model_id", ""), r.get("replica", "")))
