"""Metrics: scrape+parse+store throughput, 30-day chart query time, cluster page render time.

    python benchmarks/metrics_bench.py

Uses a fresh SQLite database in a temporary directory (or DATABASE_URL when set). Baselines in the same run:
parsing alone (prometheus_client) against parse+store, and the 30-day query on raw points against the rollup.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["CONTROLPLANE_VAR_DIR"] = tempfile.mkdtemp(prefix="cp-bench-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402


def exposition(n_series: int, bump: int) -> str:
    """n_series multiplexed-model counters and gauges, as 100 replicas of 50 applications would export."""
    lines = [
        "# TYPE ray_serve_multiplexed_get_model_requests_counter_total counter",
        "# TYPE ray_serve_num_multiplexed_models gauge",
    ]
    for i in range(n_series // 2):
        labels = f'application="app{i % 50}",deployment="D{i % 7}",replica="r{i}",WorkerId="w{i}"'
        lines.append(f"ray_serve_multiplexed_get_model_requests_counter_total{{{labels}}} {100 + i + bump}")
        lines.append(f"ray_serve_num_multiplexed_models{{{labels}}} {i % 4}")
    return "\n".join(lines) + "\n"


def main() -> None:
    from apps.clusters.services import cluster_create
    from apps.metrics import services
    from apps.metrics.models import Point, Series
    from apps.metrics.selectors import query
    from workers.clients import prometheus

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_user(
        "bench", password="x-bench-password-1", is_staff=True, is_superuser=True
    )
    cluster = cluster_create(
        actor=admin,
        data={"name": "bench", "dashboard_url": "http://127.0.0.1:1"},
        pools=[{"name": "a100", "resource": "GPU", "capacity": 400}],
    )

    # 1. Scrape + parse + store, 5,000 series per scrape.
    pages = [exposition(5000, k) for k in range(4)]
    t0 = time.perf_counter()
    parsed = sum(len(list(prometheus.parse(p, set(services.FAMILIES)))) for p in pages)
    parse_s = time.perf_counter() - t0
    original = prometheus.fetch
    now = timezone.now()
    try:
        timings = []
        for k, page in enumerate(pages):
            prometheus.fetch = lambda target, timeout=5, page=page: page  # the client seam
            t0 = time.perf_counter()
            services.scrape_cluster(cluster.pk, targets=["bench:8080"], now=now + timedelta(seconds=15 * k))
            timings.append(time.perf_counter() - t0)
    finally:
        prometheus.fetch = original
    steady = timings[1:]  # the first scrape also creates the series
    print(
        f"scrape of 5,000 series: parse only {parsed / parse_s:,.0f} samples/s (baseline); "
        f"parse+store {5000 * len(steady) / sum(steady):,.0f} samples/s "
        f"({sum(steady) / len(steady) * 1000:.0f} ms a scrape; "
        f"first scrape, creating series: {timings[0] * 1000:.0f} ms)"
    )

    # 2. A 30-day chart of one series: rollups against raw points.
    series = Series.objects.create(
        cluster=cluster,
        name="ray_resources",
        labels={"Name": "GPU", "State": "USED", "NodeAddress": "n1"},
        key="bench-gpu",
        kind="gauge",
    )
    start = now - timedelta(days=30)
    rng = random.Random(1)
    Point.objects.bulk_create(
        (
            Point(series=series, resolution=Point.HOUR, ts=start + timedelta(hours=h), value=rng.random() * 4)
            for h in range(30 * 24)
        ),
        batch_size=5000,
    )
    Point.objects.bulk_create(
        (
            Point(series=series, resolution=Point.RAW, ts=start + timedelta(seconds=15 * i), value=rng.random() * 4)
            for i in range(30 * 24 * 240)
        ),
        batch_size=20000,
    )
    t0 = time.perf_counter()
    month = query("gpu_allocated", cluster=cluster, start=start, end=now, step=3600, now=now)
    rollup_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    raw_rows = list(Point.objects.filter(series=series, resolution=Point.RAW, ts__gte=start).values_list("ts", "value"))
    raw_ms = (time.perf_counter() - t0) * 1000
    print(
        f"30-day chart of one series: {rollup_ms:.1f} ms reading {len(month[0]['points'])} hourly points "
        f"(baseline: reading the {len(raw_rows):,} raw points takes {raw_ms:.0f} ms)"
    )

    # 3. The cluster page with 50 nodes and 500 replicas.
    from apps.applications.services import application_create
    from apps.quotas.services import quota_set
    from apps.teams.services import team_create

    team = team_create(actor=admin, slug="bench", name="Bench")
    quota_set(actor=admin, team=team, cluster=cluster, pool_name="a100", gpus=400)
    cluster.nodes = [
        {
            "node_id": f"node{i:02d}" + "0" * 50,
            "node_ip": f"10.0.0.{i}",
            "state": "ALIVE",
            "is_head_node": i == 0,
            "resources_total": {"CPU": 32, "GPU": 0 if i == 0 else 8},
            "labels": {"pool": "a100"},
        }
        for i in range(50)
    ]
    cluster.save()
    for a in range(50):
        app = application_create(
            actor=admin,
            team=team,
            cluster=cluster,
            name=f"app{a}",
            spec={
                "route_prefix": f"/a{a}",
                "import_path": "examples.hello:app",
                "deployments": [{"name": "Hello", "num_replicas": 10, "ray_actor_options": {"num_gpus": 0.5}}],
            },
        )
        app.status = {
            "status": "RUNNING",
            "deployments": {
                "Hello": {
                    "status": "HEALTHY",
                    "required_resources": {"CPU": 1, "GPU": 0.5},
                    "replicas": [
                        {
                            "replica_id": f"r{a}-{k}",
                            "node_id": f"node{1 + (a * 10 + k) % 49:02d}" + "0" * 50,
                            "state": "RUNNING",
                        }
                        for k in range(10)
                    ],
                }
            },
        }
        app.state = "running"
        app.save()
    client = Client()
    client.force_login(admin)
    client.get(f"/clusters/{cluster.pk}/")  # warm templates
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        resp = client.get(f"/clusters/{cluster.pk}/")
        times.append((time.perf_counter() - t0) * 1000)
    assert resp.status_code == 200
    t0 = time.perf_counter()
    client.get("/healthz")
    base = (time.perf_counter() - t0) * 1000
    print(f"cluster page, 50 nodes / 500 replicas: median {sorted(times)[2]:.0f} ms (baseline: /healthz {base:.1f} ms)")


if __name__ == "__main__":
    main()
