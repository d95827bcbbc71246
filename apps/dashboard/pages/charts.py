"""Chart fragments: the same derived series as the API, drawn by the vendored Chart.js (htmx refreshes them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from apps.applications.selectors import visible_application
from apps.clusters.selectors import cluster_by_id
from apps.metrics import prom, visibility
from apps.metrics.models import ScrapeRun
from apps.metrics.selectors import RAY_SERIES
from apps.metrics.sources import is_remote, query
from apps.quotas.models import Quota
from apps.teams.principal import principal_of

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
TITLES = {
    "requests": ("Requests", "req/s"),
    "request_latency_ms": ("Request latency", "ms"),
    "cache_hit_rate": ("Model cache hit rate", "%"),
    "model_loads": ("Model loads", "loads/min"),
    "model_load_latency_ms": ("Model load latency", "ms"),
    "gpu_allocated": ("GPUs allocated per node", "GPUs"),
    "gpu_utilization": ("GPU utilisation", "%"),
    "team_gpus_allocated": ("GPUs allocated to the team", "GPUs"),
    "models_resident": ("Models resident per replica", "models"),
    "app_gpu_memory_mb": ("GPU memory held", "GiB"),
    "app_gpu_utilization": ("GPU utilisation of its replicas", "% of one GPU"),
    "gpu_memory_used_mb": ("GPU memory used per GPU", "GiB"),
}
# How a series' values are drawn: ratios as percentages, MiB as GiB (the rest as they are).
SCALE = {"cache_hit_rate": 100.0, "app_gpu_memory_mb": 1 / 1024, "gpu_memory_used_mb": 1 / 1024}
NO_NVML = (
    "Ray reads GPU memory and utilisation through NVML, so only real GPUs report them; logical GPUs (the demo "
    "cluster's) have none, and allocation is the measure there."
)


EMPTY = {
    "gpu_utilization": NO_NVML,
    "app_gpu_memory_mb": NO_NVML,
    "app_gpu_utilization": NO_NVML,
    "gpu_memory_used_mb": NO_NVML,
    "gpu_allocated": "Allocation is sampled with every metrics scrape once the cluster has been observed.",
    "team_gpus_allocated": "Allocation is sampled with every metrics scrape once the team's apps run.",
}


@login_required
def chart(request: HttpRequest) -> HttpResponse:
    name = request.GET.get("series", "")
    if name not in TITLES:
        raise Http404("No such series")
    span = RANGES.get(request.GET.get("range", "1h"), RANGES["1h"])
    now = timezone.now()
    start = now - span
    step = max(15, int(span.total_seconds() // 120))
    principal = principal_of(request)
    application = team = app = None
    quota = None
    if request.GET.get("application"):
        app = visible_application(principal, request.GET["application"])
        if app is None:
            raise Http404
        cluster, application = app.cluster, app.serve_name
    else:
        cluster_id = request.GET.get("cluster", "")
        cluster = cluster_by_id(cluster_id)
        if cluster is None:
            raise Http404
    if name == "team_gpus_allocated":
        team = request.GET.get("team", "")
        if not principal.teams().filter(slug=team).exists():
            raise Http404
        quota = sum(float(q.gpus) for q in Quota.objects.filter(team__slug=team, cluster=cluster))
    unavailable = ""
    try:
        series = query(
            name, cluster=cluster, start=start, end=now, step=step, now=now, application=application, team=team
        )
    except prom.SourceUnavailable as exc:
        series, unavailable = [], str(exc)
    series = (
        visibility.since(series, app.created_at, step)
        if app
        else visibility.for_principal(principal, cluster, series, step)
    )
    remote = name in RAY_SERIES and is_remote(cluster)
    source = "Prometheus" if remote else ""
    title, unit = TITLES[name]
    empty = EMPTY.get(name, "Metrics are scraped every few seconds once the application serves traffic.")
    datasets = []
    scale = SCALE.get(name, 1.0)
    for s in series:
        label = " ".join(f"{v}" for k, v in s["labels"].items() if v) or title
        datasets.append(
            {
                "label": label,
                "data": [{"x": ts * 1000, "y": round(v * scale, 4) if v is not None else v} for ts, v in s["points"]],
            }
        )
    # A window longer than the record (a new app's first minutes on the 1 h range) starts at the first sample, so
    # the data fills the chart rather than its right fifth, and the caption says since when.
    first = min((p["x"] for d in datasets for p in d["data"]), default=None)
    axis_min = int(start.timestamp() * 1000)
    since = None
    if first is not None and first - axis_min > (now - start).total_seconds() * 1000 / 10:
        axis_min = first - step * 1000
        since = datetime.fromtimestamp(first / 1000, tz=UTC)
    if quota is not None:
        datasets.append(
            {
                "label": "quota",
                "data": [
                    {"x": axis_min, "y": quota},
                    {"x": int(now.timestamp() * 1000), "y": quota},
                ],
                "quota": True,
            }
        )
    points = sum(len(d["data"]) for d in datasets if not d.get("quota"))
    chart_id = f"chart-{name}-{abs(hash(request.get_full_path())) % 10**8}"
    return render(
        request,
        "metrics/_chart.html",
        {
            "empty": empty,
            "unavailable": unavailable,
            "source": source,
            "chart_id": chart_id,
            "data_id": f"{chart_id}-data",
            "title": title,
            "unit": unit,
            "points": points,
            "since": since,
            "data": {
                "datasets": datasets,
                "unit": unit,
                "ymax": 100 if unit == "%" else None,
                "min": axis_min,
                "max": int(now.timestamp() * 1000),
            },
            "query": "&".join(f"{k}={v}" for k, v in request.GET.items() if k != "range"),
            "range": request.GET.get("range", "1h"),
            "ranges": list(RANGES),
        },
    )


@login_required
def source_status(request: HttpRequest, pk: int) -> HttpResponse:
    """Which source the cluster's charts read, and whether it answers now (asked once per cache period)."""
    cluster = cluster_by_id(str(pk))
    if cluster is None:
        raise Http404
    check = None
    last_scrape = None
    if is_remote(cluster):
        key = f"prom-check:{cluster.pk}:{cluster.metrics_config.prometheus_url}"
        check = cache.get(key)
        if check is None:
            check = prom.check(cluster)
            cache.set(key, check, 15)
        cluster.metrics_config.refresh_from_db(fields=["metrics_answered_at", "metrics_error"])
    else:
        last_scrape = ScrapeRun.objects.filter(cluster=cluster).exclude(finished_at=None).first()
    return render(request, "metrics/_source.html", {"cluster": cluster, "check": check, "last_scrape": last_scrape})
