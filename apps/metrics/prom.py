"""Ray's series read from a Prometheus-compatible query API, with the meaning the embedded store gives them.

Each reader is one PromQL expression over Ray's metric names, restricted by the cluster's label matchers. A chart
bucket [t, t+step) of the embedded store is the PromQL value evaluated at t+step over a window of at least the
step (``rate``/``increase``/``*_over_time``), drawn at t. Results, and a failure, are cached briefly per
cluster, so a page of charts against a slow or unreachable endpoint waits at most once.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from apps.clusters.models import Cluster
from workers.clients.promql import PromQLClient, PromQLError, Result, selector

from .models import MetricsConfig


class SourceUnavailable(Exception):
    """The cluster's query endpoint did not answer; the message says why (never a credential)."""


# The series each reader needs, by the product's name (what the embedded store scrapes under the same meaning).
HTTP_REQUESTS = "ray_serve_num_http_requests_total"
HTTP_LATENCY = "ray_serve_http_request_latency_ms_bucket"
MUX_REQUESTS = "ray_serve_multiplexed_get_model_requests_counter_total"
MUX_LOADS = "ray_serve_multiplexed_models_load_counter_total"
MUX_LOAD_LATENCY = "ray_serve_multiplexed_model_load_latency_ms_bucket"
MUX_RESIDENT = "ray_serve_num_multiplexed_models"
MUX_MODEL_ID = "ray_serve_registered_multiplexed_model_id"
HANDLE_REQUESTS = "ray_serve_deployment_request_counter_total"
GPU_MEMORY = "ray_component_gpu_memory_mb"  # per process group (Component), MiB
REPLICA_COMPONENT = "ray::ServeReplica:"
_APP_OF_COMPONENT = '"ray::ServeReplica:([^:]+):.*"'


@dataclass(frozen=True)
class Window:
    """What one chart asks: [start, end) in buckets of ``step`` seconds."""

    start: datetime
    end: datetime
    step: int


def _client(cluster: Cluster) -> PromQLClient:
    return PromQLClient(
        cluster.metrics_config.prometheus_url,
        credential=cluster.metrics_config.prometheus_credential,
        timeout=settings.PROMETHEUS_TIMEOUT_S,
    )


def _down_key(cluster: Cluster) -> str:
    return f"prom-down:{cluster.pk}:{hashlib.sha1(cluster.metrics_config.prometheus_url.encode()).hexdigest()[:12]}"


def _ask(cluster: Cluster, kind: str, expr: str, *args: float) -> list[Result]:
    """Run one query through the cache; record on the cluster when the endpoint last answered or why it did not."""
    key = (
        "prom:"
        + hashlib.sha1(repr((cluster.pk, cluster.metrics_config.prometheus_url, kind, expr, args)).encode()).hexdigest()
    )
    hit = cache.get(key)
    if hit is not None:
        return hit
    down = cache.get(_down_key(cluster))
    if down:
        raise SourceUnavailable(down)
    client = _client(cluster)
    try:
        result = client.query(expr, *args) if kind == "query" else client.query_range(expr, *args)
    except PromQLError as exc:
        reason = str(exc)
        if "refused the query" not in reason:  # the endpoint is down or slow: stop asking it for a while
            cache.set(_down_key(cluster), reason, settings.PROMETHEUS_CACHE_S)
        _record(cluster, reason)
        raise SourceUnavailable(reason) from exc
    cache.set(key, result, settings.PROMETHEUS_CACHE_S)
    _record(cluster, "")
    return result


def _record(cluster: Cluster, error: str) -> None:
    """At most one write a minute while all is well; at once when the state changes."""
    now = timezone.now()
    qs = MetricsConfig.objects.filter(pk=cluster.pk)
    if error:
        qs.exclude(metrics_error=error).update(metrics_error=error[:500])
        return
    qs.filter(
        Q(metrics_answered_at__isnull=True)
        | Q(metrics_answered_at__lt=now - timedelta(seconds=60))
        | ~Q(metrics_error="")
    ).update(metrics_answered_at=now, metrics_error="")


def check(cluster: Cluster) -> dict[str, Any]:
    """Ask the endpoint something every Prometheus answers, and how many of this cluster's targets are up."""
    started = timezone.now()
    try:
        up = _client(cluster).query(f"count(up{selector(cluster.metrics_config.prometheus_matchers)})")
    except PromQLError as exc:
        _record(cluster, str(exc))
        return {"ok": False, "error": str(exc)}
    _record(cluster, "")
    targets = int(up[0].points[0][1]) if up and up[0].points else 0
    return {"ok": True, "targets": targets, "ms": round((timezone.now() - started).total_seconds() * 1000, 1)}


BORN_LOOKBACK_S = 300  # Prometheus's default lookback: how far before a window a series' last sample is looked for


def _grown(series: str, seconds: int) -> str:
    """Per series, how much a counter grew over the window, as the embedded store counts it: ``increase`` for a
    series that existed when the window opened, and its whole value for one born inside it (a proxy or replica that
    served its first request there), which ``increase`` alone would count from its first scrape, not from zero.

    "Existed" means a real sample in the ``max(window, BORN_LOOKBACK_S)`` before the window, read with
    ``last_over_time`` over a range: an instant ``series offset window`` is empty when a scrape failed at the
    window's start (Prometheus marks the target's series stale), and would count such a series' whole life."""
    w = f"{int(seconds)}s"
    before = f"last_over_time({series}[{max(int(seconds), BORN_LOOKBACK_S)}s] offset {w})"
    return f"((increase({series}[{w}]) and {before}) or (last_over_time({series}[{w}]) unless {before}))"


def _range_window(step: int) -> int:
    return max(int(step), int(settings.PROMETHEUS_MIN_RANGE_S))


def _range(cluster: Cluster, expr: str, w: Window) -> list[Result]:
    """A range query whose point at t+step stands for the bucket starting at t (as the embedded store draws it)."""
    step = int(w.step)
    first = math.floor(w.start.timestamp() / step) * step + step
    last = math.ceil(w.end.timestamp() / step) * step
    return [
        Result(r.labels, [(ts - step, v) for ts, v in r.points])
        for r in _ask(cluster, "range", expr, float(first), float(last), float(step))
    ]


def _emit(results: list[Result], keys: tuple[str, ...], extra: dict[str, str] | None = None) -> list[dict]:
    out = [
        {
            "labels": {**{k: r.labels.get(k, "") for k in keys}, **(extra or {})},
            "points": [[int(ts), round(v, 6)] for ts, v in r.points],
        }
        for r in results
    ]
    return sorted(out, key=lambda s: tuple(sorted(s["labels"].items())))


def series(cluster: Cluster, name: str, w: Window, application: str | None = None) -> list[dict]:
    """The named series of one cluster, from its query endpoint. Raises SourceUnavailable."""
    m = cluster.metrics_config.prometheus_matchers or {}
    app = {"application": application} if application else {}
    seconds = _range_window(w.step)
    win = f"[{seconds}s]"
    if name == "requests":
        expr = f"sum by (application) ({_grown(HTTP_REQUESTS + selector(m, app), seconds)}) / {seconds}"
        return _emit(_range(cluster, expr, w), ("application",))
    if name in ("request_latency_ms", "model_load_latency_ms"):
        family, keys = (
            (HTTP_LATENCY, ("application",))
            if name == "request_latency_ms"
            else (MUX_LOAD_LATENCY, ("application", "deployment"))
        )
        by = ", ".join((*keys, "le"))
        out = []
        for q, label in ((0.5, "p50"), (0.95, "p95")):
            expr = f"histogram_quantile({q}, sum by ({by}) (rate({family}{selector(m, app)}{win})))"
            out += _emit(_range(cluster, expr, w), keys, {"quantile": label})
        return out
    if name == "model_loads":
        expr = f"sum by (application, deployment) ({_grown(MUX_LOADS + selector(m, app), seconds)}) * 60 / {seconds}"
        return _emit(_range(cluster, expr, w), ("application", "deployment"))
    if name == "cache_hit_rate":
        by = "sum by (application, deployment)"
        loads = f"{by} ({_grown(MUX_LOADS + selector(m, app), seconds)})"
        reqs = f"{by} ({_grown(MUX_REQUESTS + selector(m, app), seconds)})"
        # No load counter yet (every request hit): zero loads, not no answer.
        expr = f"1 - (({loads}) or (0 * {reqs})) / (({reqs}) > 0)"
        return _emit(_range(cluster, expr, w), ("application", "deployment"))
    if name == "models_resident":
        expr = f"avg by (application, deployment, replica) (avg_over_time({MUX_RESIDENT}{selector(m, app)}{win}))"
        return _emit(_range(cluster, expr, w), ("application", "deployment", "replica"))
    if name == "gpu_utilization":
        expr = f"avg by (ip, GpuIndex) (avg_over_time(ray_node_gpus_utilization{selector(m)}{win}))"
        return _emit(_range(cluster, expr, w), ("ip", "GpuIndex"))
    if name == "app_gpu_memory_mb":
        family = GPU_MEMORY
        # Ray names a replica's process ray::ServeReplica:<app>:<deployment>; the application is taken from it.
        replicas = {
            "Component": f"{re.escape(REPLICA_COMPONENT + application)}:.+"
            if application
            else f"{re.escape(REPLICA_COMPONENT)}.+"
        }
        inner = f"avg_over_time({family}{selector(m, regex=replicas)}{win})"
        expr = f'sum by (application) (label_replace({inner}, "application", "$1", "Component", {_APP_OF_COMPONENT}))'
        return _emit(_range(cluster, expr, w), ("application",))
    if name == "gpu_memory_used_mb":
        expr = f"avg by (ip, GpuIndex) (avg_over_time(ray_node_gram_used{selector(m)}{win}))"
        return _emit(_range(cluster, expr, w), ("ip", "GpuIndex"))
    if name == "gpu_allocated":
        sel = selector(m, {"Name": "GPU", "State": "USED"})
        expr = f"sum by (NodeAddress) (avg_over_time(ray_resources{sel}{win}))"
        return [
            {"labels": {"node": s["labels"]["NodeAddress"]}, "points": s["points"]}
            for s in _emit(_range(cluster, expr, w), ("NodeAddress",))
        ]
    raise ValueError(f"{name!r} is not one of Ray's series")


def residency(cluster: Cluster, application: str | None = None, now: datetime | None = None) -> list[dict]:
    """Which replicas hold which models now, and since when (within the last hour), as the embedded store says."""
    now = now or timezone.now()
    app = {"application": application} if application else {}
    step = 30
    end = math.floor(now.timestamp() / 5) * 5  # at most 5 s old (and cached that long): the last point is "now"
    rows = _ask(
        cluster,
        "range",
        f"{MUX_MODEL_ID}{selector(cluster.metrics_config.prometheus_matchers or {}, app)}",
        end - 3600.0,
        end,
        step,
    )
    out = []
    for r in rows:
        pts = r.points
        if not pts or pts[-1][0] < end - 2 * step or pts[-1][1] < 1:
            continue  # gone (the replica stopped) or unloaded
        since = max((i for i, (_, v) in enumerate(pts) if v < 1), default=-1)
        labels = {k: r.labels.get(k, "") for k in ("application", "deployment", "replica", "model_id")}
        ts = datetime.fromtimestamp(pts[since + 1][0], tz=timezone.get_current_timezone())
        out.append({**labels, "resident_since": ts.isoformat()})
    return sorted(out, key=lambda r: (r.get("application", ""), r.get("model_id", ""), r.get("replica", "")))


def window_sums(
    cluster: Cluster, metric: str, window_s: float, now: datetime, by: tuple[str, ...], how: str = "increase"
) -> dict[tuple[str, ...], float]:
    """Per label group: the increase of a counter (or the peak of a gauge, how="max") over the last window_s."""
    sel = metric + selector(cluster.metrics_config.prometheus_matchers or {})
    if how == "increase":
        expr = f"sum by ({', '.join(by)}) ({_grown(sel, int(window_s))})"
    else:
        expr = f"max by ({', '.join(by)}) (max_over_time({sel}[{int(window_s)}s]))"
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for r in _ask(cluster, "query", expr, float(int(now.timestamp()))):
        if r.points:
            out[tuple(r.labels.get(k, "") for k in by)] += r.points[0][1]
    return dict(out)


def covered_since(cluster: Cluster, window_s: float, now: datetime) -> datetime | None:
    """The earliest moment in the window (to a minute) at which Prometheus scraped one of the cluster's targets;
    None when it has none there (no verdict can be drawn from missing data)."""
    sel = selector(cluster.metrics_config.prometheus_matchers or {})
    expr = f"min(min_over_time(timestamp(up{sel})[{int(window_s) + 300}s:60s]))"
    rows = _ask(cluster, "query", expr, float(int(now.timestamp())))
    if not rows or not rows[0].points:
        return None
    return datetime.fromtimestamp(rows[0].points[0][1], tz=timezone.get_current_timezone())
