"""Alert rule evaluation: one pass over 1,000 apps and 100 rules, against a per-app evaluation in the same run.

    python benchmarks/alerts_eval.py [--apps 1000] [--rules 100] [--points 20]

A fresh database (SQLite in a temp dir, or the PostgreSQL in BENCH_DATABASE_URL). 1,000 RUNNING apps holding GPUs
on 4 clusters, 20 of them failed, 10 crash-looping, multiplexed counters for 100 of them, request counters for all
(``--points`` scrapes each); 100 rules: the 10 defaults plus team and application overrides. The baseline is the
same verdicts computed app by app (one rule lookup and one series query per app), as a naive evaluator would.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["CONTROLPLANE_VAR_DIR"] = tempfile.mkdtemp(prefix="cp-bench-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
if os.environ.get("BENCH_DATABASE_URL"):
    os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
else:
    os.environ.pop("DATABASE_URL", None)
os.environ.pop("CELERY_BROKER_URL", None)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402


def build(apps: int, rules: int, points: int, seed: int = 1) -> None:
    from apps.alerts.models import AlertRule
    from apps.alerts.services import ensure_default_rules
    from apps.applications.models import Application, Revision
    from apps.clusters.models import Cluster
    from apps.metrics.models import Point, ScrapeRun, Series
    from apps.metrics.services import series_key
    from apps.teams.models import Team

    rng = random.Random(seed)
    now = timezone.now()
    clusters = [
        Cluster.objects.create(name=f"c{i}", dashboard_url=f"http://127.0.0.1:{9000 + i}", inventory_taken_at=now)
        for i in range(4)
    ]
    teams = [Team.objects.create(slug=f"t{i}", name=f"T{i}") for i in range(50)]
    rows = []
    for i in range(apps):
        state = "deploy_failed" if i < 20 else "running"
        rows.append(
            Application(
                team=teams[i % len(teams)],
                cluster=clusters[i % len(clusters)],
                name=f"a{i}",
                state=state,
                status={
                    "status": state.upper(),
                    "last_deployed_time_s": (now - timedelta(hours=3)).timestamp(),
                    "deployments": {
                        "D": {
                            "required_resources": {"GPU": 0.5},
                            "replicas": [{"replica_id": f"r{i}", "state": "RUNNING", "node_id": "n"}],
                        }
                    },
                },
                replica_starts=[{"t": now.timestamp() - k, "deployment": "D", "replica_id": f"x{k}"} for k in range(5)]
                if 20 <= i < 30
                else [],
            )
        )
    created = Application.objects.bulk_create(rows)
    Revision.objects.bulk_create(
        [Revision(application=a, number=1, spec={"import_path": "x:y"}, spec_hash="h") for a in created]
    )
    ensure_default_rules()
    kinds = ["idle_gpu", "cache_thrash", "crash_loop", "app_failed", "quota_high", "admission_refused"]
    extra = []
    for k in range(rules - 10):
        if k % 2:
            extra.append(AlertRule(kind=kinds[k % len(kinds)], team=teams[k % len(teams)], params={}))
        else:
            app = created[k]
            extra.append(AlertRule(kind=kinds[k % len(kinds)], team=app.team, application=app, params={}))
    AlertRule.objects.bulk_create(extra, ignore_conflicts=True)
    series, pts = [], []
    for c in clusters:
        for j in range(points):
            ScrapeRun.objects.create(
                cluster=c, started_at=now - timedelta(minutes=70 - j * 70 / points), finished_at=now, samples=1
            )
    for i, app in enumerate(created):
        labels = {"application": app.serve_name, "route": "/", "status_code": "200", "NodeAddress": "n"}
        series.append(
            Series(
                cluster=app.cluster,
                name="ray_serve_num_http_requests",
                labels=labels,
                key=series_key("ray_serve_num_http_requests", labels),
                kind="counter",
            )
        )
        if i % 10 == 0:
            for name in (
                "ray_serve_multiplexed_get_model_requests_counter",
                "ray_serve_multiplexed_models_load_counter",
            ):
                labels = {"application": app.serve_name, "deployment": "D", "replica": f"r{i}"}
                series.append(
                    Series(cluster=app.cluster, name=name, labels=labels, key=series_key(name, labels), kind="counter")
                )
    Series.objects.bulk_create(series, batch_size=2000)
    for s in Series.objects.all():
        busy = rng.random() < 0.7
        for j in range(points):
            value = rng.randint(1, 20) if busy else 0
            pts.append(Point(series=s, ts=now - timedelta(minutes=60 - j * 60 / points), value=value))
    Point.objects.bulk_create(pts, batch_size=5000)


def naive_idle(now):
    """The baseline: for each app, its own rule lookup and its own request query."""
    from apps.alerts.conditions import Rules, app_gpus
    from apps.alerts.models import AlertRule
    from apps.applications.models import Application
    from apps.metrics.models import Point

    out = 0
    for app in Application.objects.filter(deleted_at__isnull=True, state="running").select_related("team"):
        rule = Rules(list(AlertRule.objects.filter(kind="idle_gpu"))).for_subject(
            "idle_gpu", application=app.pk, team=app.team_id, cluster=app.cluster_id
        )
        if rule is None or app_gpus(app) <= 0:
            continue
        total = Point.objects.filter(
            series__cluster_id=app.cluster_id,
            series__labels__application=app.serve_name,
            ts__gte=now - timedelta(hours=1),
        ).aggregate(t=Sum("value"))["t"]
        out += not total
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    build(args.apps, args.rules, args.points)
    from apps.alerts.models import AlertRule, Incident
    from apps.alerts.services import evaluate

    print(
        f"database: {connection.vendor}; built {args.apps} apps, {AlertRule.objects.count()} rules in "
        f"{time.perf_counter() - started:.1f} s"
    )
    first = evaluate()
    print(f"first pass: {first.seconds * 1000:.0f} ms, {first.opened} incidents opened")
    times, queries = [], []
    for _ in range(args.runs):
        with CaptureQueriesContext(connection) as ctx:
            result = evaluate()
        times.append(result.seconds * 1000)
        queries.append(len(ctx.captured_queries))
    kinds = {}
    for kind in Incident.objects.values_list("kind", flat=True):
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"incidents by kind: {dict(sorted(kinds.items()))}")
    now = timezone.now()
    with CaptureQueriesContext(connection) as ctx:
        t0 = time.perf_counter()
        idle_naive = naive_idle(now)
        naive_ms = (time.perf_counter() - t0) * 1000
    naive_q = len(ctx.captured_queries)
    print(
        f"evaluation pass (steady state, {args.runs} runs): median {statistics.median(times):.0f} ms, "
        f"max {max(times):.0f} ms, {statistics.median(queries):.0f} queries"
    )
    print(
        f"baseline, idle-GPU rule alone evaluated app by app: {naive_ms:.0f} ms, {naive_q} queries ({idle_naive} idle)"
    )
    print(
        f"ratio: the whole pass of every rule costs {statistics.median(times) / naive_ms:.2f}x the baseline's "
        f"one rule, in {statistics.median(queries) / naive_q:.3f}x the queries"
    )


if __name__ == "__main__":
    main()
