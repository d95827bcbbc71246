"""The control plane's own health and metrics: /healthz, /readyz, /metrics (Prometheus), JSON logs."""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

# In a process of its own, metrics live in REGISTRY. With PROMETHEUS_MULTIPROC_DIR set (make run, the web
# container's gunicorn workers, a worker sharing the web's volume), every process writes its counters to files in
# that directory and /metrics adds them up, so a push counted in a Celery worker shows on the web's /metrics.
REGISTRY = CollectorRegistry()
PUSHES = Counter(
    "controlplane_pushes_total",
    "Serve config pushes by outcome (succeeded, skipped, refused, unreachable, invalid)",
    ["cluster", "outcome"],
    registry=REGISTRY,
)
PUSH_SECONDS = Histogram(
    "controlplane_push_seconds",
    "Time to build, validate and send one push",
    ["cluster"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCRAPES = Counter(
    "controlplane_scrapes_total", "Metric scrapes of Ray clusters by outcome", ["cluster", "outcome"], registry=REGISTRY
)
TASKS = Counter(
    "controlplane_tasks_total", "Celery tasks run, by task and outcome", ["task", "outcome"], registry=REGISTRY
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition_registry(*, with_database: bool = True) -> CollectorRegistry:
    """What /metrics (or a worker's own endpoint) exposes: every process's counters, and the database's numbers."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = CollectorRegistry()
        registry.register(_Forward(REGISTRY))
    registry.register(InfoCollector())
    if with_database:  # numbers that live in the database (settings.METRICS_COLLECTORS), the same in every process
        for path in settings.METRICS_COLLECTORS:
            registry.register(import_string(path)())
    return registry


class _Forward:
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self):
        yield from self.source.collect()


class InfoCollector:
    def collect(self):
        info = GaugeMetricFamily("controlplane_info", "Build information", labels=["version"])
        info.add_metric(["0.1.0"], 1)
        yield info


def broker_queue_depth() -> int | None:
    from celery import current_app as app

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            _, count, _ = conn.default_channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
            return int(count)
    except Exception:  # noqa: BLE001 - a missing queue or broker is reported by /readyz, not here
        return None


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """The database and the broker answer; 503 naming what does not."""
    checks: dict[str, str] = {}
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"unavailable: {type(exc).__name__}"
    from celery import current_app as app

    try:
        with app.connection(app.conf.broker_url, transport_options=app.conf.broker_transport_options) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {
            "status": "ok" if ok else "unavailable",
            "checks": checks,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
        status=200 if ok else 503,
    )


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of the control plane itself (pushes, failures, push latency, queue depth)."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        return HttpResponse(status=401)
    return HttpResponse(generate_latest(exposition_registry()), content_type=CONTENT_TYPE_LATEST)
