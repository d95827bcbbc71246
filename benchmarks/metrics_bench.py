"""Metrics: scrape+parse+store throughput, 30-day chart query time, cluster page render time.

    python benchmarks/metrics_bench.py

Uses a fresh SQLite database in a temporary directory; the ingest part runs again on PostgreSQL (a fresh database
``cp_bench`` on BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres; left out, and said so, when
none answers). The Prometheus part backfills 30 days of Ray's series into a real Prometheus (Debian's package)
with promtool. Baselines in the same run: parsing alone against parse+store, the 30-day query on raw points
against the rollup, the embedded store against Prometheus.
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
INGEST_ONLY = "--ingest-only" in sys.argv
if INGEST_ONLY and os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]

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


def ingest(cluster) -> dict:
    """Scrape + parse + store of 5,000 series, against parsing alone (this parser and prometheus_client's)."""
    from prometheus_client.parser import text_string_to_metric_families

    from apps.metrics import services
    from controlplane import heap
    from workers.clients import prometheus

    pages = [exposition(5000, k) for k in range(11)]
    wanted = set(services.FAMILIES)
    t0 = time.perf_counter()
    parsed = sum(len(list(prometheus.parse(p, wanted))) for p in pages[:6])
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = sum(len(f.samples) for p in pages[:6] for f in text_string_to_metric_families(p) if f.name in wanted)
    ref_s = time.perf_counter() - t0
    original, original_store = prometheus.fetch, services._store
    held: list[float] = []

    def timed_store(*args, **kwargs):  # how long the write transaction (SQLite's one writer lock) is held
        t = time.perf_counter()
        try:
            return original_store(*args, **kwargs)
        finally:
            held.append(time.perf_counter() - t)

    now = timezone.now()
    services._store = timed_store
    try:
        timings = []
        for k, page in enumerate(pages):
            if k == 6:  # scrapes 1-5: the heap as it was; 6-10: settled, as a worker's is once it is ready
                del held[:]
                heap.settle()
            prometheus.fetch = lambda target, timeout=5, gzip=True, page=page: page  # the client seam
            t0 = time.perf_counter()
            services.scrape_cluster(cluster.pk, targets=["bench:8080"], now=now + timedelta(seconds=15 * k))
            timings.append(time.perf_counter() - t0)
    finally:
        prometheus.fetch, services._store = original, original_store
    unsettled, steady = timings[1:6], timings[6:]  # the first scrape also creates the series
    cpu = os.cpu_count() or 1
    result = {
        "db": connection_vendor(),
        "parse": parsed / parse_s,
        "parse_prometheus_client": ref / ref_s,
        "ingest": 5000 * len(steady) / sum(steady),
        "ingest_unsettled": 5000 * len(unsettled) / sum(unsettled),
        "scrape_ms": sum(steady) / len(steady) * 1000,
        "lock_ms": sorted(held)[len(held) // 2] * 1000,
        "writes": 5000 / sorted(held)[len(held) // 2],
        "first_ms": timings[0] * 1000,
    }
    print(
        f"[{result['db']}] scrape of 5,000 series on one core: bulk writes {result['writes']:,.0f} samples/s "
        f"(the write transaction, {result['lock_ms']:.0f} ms; target 50,000: "
        f"{'met' if result['writes'] >= 50000 else 'NOT met'}); scrape+parse+store {result['ingest']:,.0f} "
        f"samples/s (target 50,000: {'met' if result['ingest'] >= 50000 else 'NOT met'}; "
        f"{result['scrape_ms']:.0f} ms a scrape; the first, creating series, {result['first_ms']:.0f} ms); "
        f"baseline, the heap not settled (controlplane/heap.py): {result['ingest_unsettled']:,.0f} samples/s; "
        f"baselines: parsing alone {result['parse']:,.0f} samples/s, prometheus_client's parser "
        f"{result['parse_prometheus_client']:,.0f} samples/s ({cpu} cores here, a scrape uses one)"
    )
    return result


def on_postgres() -> None:
    import subprocess

    import psycopg

    base = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute("DROP DATABASE IF EXISTS cp_bench")
            conn.execute("CREATE DATABASE cp_bench")
    except psycopg.Error as exc:
        print(f"[postgresql] NOT RUN: no PostgreSQL at {base.split('@')[-1]} ({type(exc).__name__}); set BENCH_PG_URL")
        return
    url = base.rsplit("/", 1)[0] + "/cp_bench"
    env = {**os.environ, "BENCH_DATABASE_URL": url}
    subprocess.run([sys.executable, __file__, "--ingest-only"], env=env, check=True)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cp_bench")


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


def main() -> None:
    from apps.clusters.services import cluster_create
    from apps.metrics.models import Point, Series
    from apps.metrics.sources import query

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
    # a benchmark's one team runs more apps than a team's default cap on a shared cluster
    type(cluster).objects.filter(pk=cluster.pk).update(team_max_apps=100_000, team_max_replicas=1_000_000)
    cluster.refresh_from_db()

    # 1. Scrape + parse + store, 5,000 series per scrape: here (SQLite), then on PostgreSQL.
    ingest(cluster)
    if INGEST_ONLY:
        return
    on_postgres()
    now = timezone.now()

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
    rollup_ms = (time.perf_counter() - t0) * 1000  # the embedded 30-day chart
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
                "route_prefix": f"/bench/a{a}",
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
    page_ms = cluster_page(client, cluster)
    t0 = time.perf_counter()
    client.get("/healthz")
    base = (time.perf_counter() - t0) * 1000
    print(
        f"cluster page, 50 nodes / 500 replicas, embedded store: median {page_ms['page']:.0f} ms, with its two "
        f"charts and the source line {page_ms['all']:.0f} ms (baseline: /healthz {base:.1f} ms)"
    )
    prometheus_part(client, cluster, now, rollup_ms)


def cluster_page(client, cluster) -> dict:
    parts = [
        f"/charts/?series=gpu_allocated&cluster={cluster.pk}",
        f"/charts/?series=gpu_utilization&cluster={cluster.pk}",
        f"/clusters/{cluster.pk}/metrics-source/",
    ]
    client.get(f"/clusters/{cluster.pk}/")  # warm templates
    pages, totals = [], []
    for _ in range(5):
        from django.core.cache import cache

        cache.clear()  # every chart asks its source again
        t0 = time.perf_counter()
        resp = client.get(f"/clusters/{cluster.pk}/")
        pages.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200
        for url in parts:
            assert client.get(url).status_code == 200, url
        totals.append((time.perf_counter() - t0) * 1000)
    return {"page": sorted(pages)[2], "all": sorted(totals)[2]}


def prometheus_part(client, cluster, now, embedded_ms: float) -> None:
    """The same 30-day chart and cluster page read from a real Prometheus holding 30 days of Ray's series."""
    sys.path.insert(0, str(ROOT))
    from django.core.cache import cache

    from apps.applications.models import Application
    from apps.metrics.sources import query
    from tests.support.prometheus import Prometheus, backfill, binary

    if not binary():
        print("Prometheus: NOT RUN, the prometheus binary is missing (apt-get install prometheus)")
        return
    work = Path(tempfile.mkdtemp(prefix="cp-bench-prom-"))
    apps = list(Application.objects.filter(cluster=cluster).order_by("pk")[:5])
    step_s = 60
    end = int(now.timestamp()) // step_s * step_s
    start = end - 30 * 86400
    text = work / "ray.om"
    samples = 0
    with text.open("w") as f:
        f.write("# TYPE ray_serve_num_http_requests counter\n")
        for app in apps:
            total = 0
            for t in range(start, end, step_s):
                total += 20 + (t // 3600) % 24 * 5  # a daily shape
                f.write(
                    f'ray_serve_num_http_requests_total{{application="{app.serve_name}",route="/",'
                    f'status_code="200",ray_cluster="bench"}} {total} {t}\n'
                )
                samples += 1
        f.write("# EOF\n")
    t0 = time.perf_counter()
    backfill(text, work / "data")
    load_s = time.perf_counter() - t0
    server = Prometheus(work, data=work / "data").start()
    try:
        source = cluster.metrics_config
        source.metrics_source = "prometheus"
        source.prometheus_url = server.url
        source.prometheus_matchers = {"ray_cluster": "bench"}
        source.save()
        t_end = now
        t_start = now - timedelta(days=30)
        chart_step = int((t_end - t_start).total_seconds() // 120)  # what the chart asks for 30 days
        # Baselines in the same run, through the same chart: the instant-offset form of "existed before the
        # window" that prom._grown used before it read a range (one missed scrape at the window's start counted a
        # counter's whole life), and plain increase() (which counts a series born inside the window from its first
        # sample, not from zero).
        from apps.metrics import prom

        def instant_offset(series: str, seconds: int) -> str:
            w = f"{int(seconds)}s"
            return f"((increase({series}[{w}]) and {series} offset {w}) or ({series} unless {series} offset {w}))"

        def plain_increase(series: str, seconds: int) -> str:
            return f"increase({series}[{int(seconds)}s])"

        current = prom._grown
        medians: dict[str, float] = {}
        try:
            for name, form in (("current", current), ("instant", instant_offset), ("increase", plain_increase)):
                prom._grown = form
                times = []
                for _ in range(5):
                    cache.clear()
                    t0 = time.perf_counter()
                    got = query("requests", cluster=cluster, start=t_start, end=t_end, step=chart_step, now=now)
                    times.append((time.perf_counter() - t0) * 1000)
                medians[name] = sorted(times)[2]
                if name == "current":
                    points = sum(len(s["points"]) for s in got)
                    t0 = time.perf_counter()
                    query("requests", cluster=cluster, start=t_start, end=t_end, step=chart_step, now=now)
                    cached_ms = (time.perf_counter() - t0) * 1000
        finally:
            prom._grown = current
        print(
            f"30-day chart from Prometheus ({len(apps)} apps, {samples:,} samples backfilled in {load_s:.1f} s): "
            f"median {medians['current']:.1f} ms for {points} points at a {chart_step} s step, {cached_ms:.2f} ms "
            f"cached (embedded store, hourly rollups: {embedded_ms:.1f} ms); baselines: the instant-offset form "
            f"{medians['instant']:.1f} ms, plain increase() {medians['increase']:.1f} ms"
        )
        page_ms = cluster_page(client, cluster)
        print(
            f"cluster page, 50 nodes / 500 replicas, Prometheus source: median {page_ms['page']:.0f} ms, with its "
            f"two charts and the source line (a live query) {page_ms['all']:.0f} ms"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
