"""Time from an API write to RUNNING on Ray, against a bare PUT of the same config, in one run.

    python benchmarks/push_latency.py [--rounds 3]

Uses the test Ray cluster (started here if it is not up, stopped at the end if started here), a fresh
SQLite database in a temporary directory, a real Celery worker thread and the DRF test client for the
API call. Also prints the number of database queries that build the merged config for 10 and 200 apps.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["CONTROLPLANE_VAR_DIR"] = tempfile.mkdtemp(prefix="cp-bench-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.core.management import call_command  # noqa: E402

APP = {
    "route_prefix": "/bench/hello",
    "import_path": "examples.hello:app",
    "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
}


def wait_running(dashboard: str, name: str, timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        apps = requests.get(f"{dashboard}/api/serve/applications/", timeout=10).json().get("applications") or {}
        if apps.get(name, {}).get("status") == "RUNNING":
            return time.perf_counter()
        time.sleep(0.05)
    raise TimeoutError(name)


def clear(dashboard: str, port: int) -> None:
    requests.put(
        f"{dashboard}/api/serve/applications/",
        json={"http_options": {"host": "0.0.0.0", "port": port}, "applications": []},
        timeout=10,
    )
    while requests.get(f"{dashboard}/api/serve/applications/", timeout=10).json().get("applications"):
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from celery.contrib.testing.worker import start_worker
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from apps.applications.services import application_create
    from apps.clusters.services import cluster_create
    from apps.deploys.config import build_serve_config
    from apps.localdev.local_ray import TEST
    from apps.quotas.services import quota_set
    from apps.teams.services import issue_token, team_create
    from controlplane.celery import app as celery_app

    call_command("migrate", verbosity=0)
    # Before anything is enqueued: the app's producer pool keeps the broker it first connected to.
    celery_app.conf.broker_url = "memory://"
    celery_app.conf.broker_transport_options = {"polling_interval": 0.1}
    started = False
    if not TEST.is_up():
        TEST.start(log=lambda m: None)
        started = True
    try:
        user = get_user_model().objects.create_user("bench", password="x-bench-password-1", is_staff=True)
        team = team_create(actor=user, slug="bench", name="Bench")
        cluster = cluster_create(
            actor=user,
            data={
                "name": "bench",
                "dashboard_url": TEST.dashboard_url,
                "serve_url": TEST.serve_url,
                "http_port": TEST.serve_port,
            },
            pools=[{"name": "a100", "resource": "GPU", "capacity": 8}],
        )
        # a benchmark's one team runs more apps than a team's default cap on a shared cluster
        type(cluster).objects.filter(pk=cluster.pk).update(team_max_apps=100_000, team_max_replicas=1_000_000)
        cluster.refresh_from_db()
        quota_set(actor=user, team=team, cluster=cluster, pool_name="a100", gpus=8)
        _, secret = issue_token(user=user, name="bench")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
        bare, through = [], []
        with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False):
            for i in range(args.rounds):
                clear(TEST.dashboard_url, TEST.serve_port)
                name = f"bare{i}"
                cfg = {
                    "http_options": {"host": "0.0.0.0", "port": TEST.serve_port},
                    "applications": [{"name": name, **APP}],
                }
                t0 = time.perf_counter()
                requests.put(f"{TEST.dashboard_url}/api/serve/applications/", json=cfg, timeout=10).raise_for_status()
                bare.append(wait_running(TEST.dashboard_url, name) - t0)

                clear(TEST.dashboard_url, TEST.serve_port)
                from apps.applications.models import Application

                Application.objects.all().delete()
                t0 = time.perf_counter()
                resp = client.post(
                    "/api/v1/applications/",
                    {"team": "bench", "cluster": cluster.pk, "name": f"cp{i}", **APP},
                    format="json",
                )
                assert resp.status_code == 201, resp.content
                try:
                    through.append(wait_running(TEST.dashboard_url, f"bench--cp{i}") - t0)
                except TimeoutError:
                    from apps.clusters.models import SyncRun

                    runs = list(SyncRun.objects.values_list("state", "trigger", "error"))
                    print(
                        "did not reach RUNNING; sync runs:",
                        runs,
                        "app:",
                        Application.objects.values_list("state", "status_message").first(),
                    )
                    raise
            clear(TEST.dashboard_url, TEST.serve_port)

        spec = {"import_path": "examples.hello:app", "deployments": [{"name": "Hello", "num_replicas": 1}]}
        counts = {}
        from apps.applications.models import Application

        Application.objects.all().delete()
        for n in (10, 200):
            while Application.objects.count() < n:
                k = Application.objects.count()
                application_create(
                    actor=user, team=team, cluster=cluster, name=f"q{k}", spec={**spec, "route_prefix": f"/bench/q{k}"}
                )
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                build_serve_config(cluster)
                counts[n] = (len(ctx), (time.perf_counter() - t0) * 1000)

        def fmt(xs: list[float]) -> str:
            return f"median {sorted(xs)[len(xs) // 2]:.2f} s (min {min(xs):.2f}, max {max(xs):.2f})"

        print(f"bare PUT -> RUNNING            : {fmt(bare)}")
        print(f"API write -> push -> RUNNING   : {fmt(through)}")
        overhead = sorted(through)[len(through) // 2] - sorted(bare)[len(bare) // 2]
        print(f"control plane overhead (median): {overhead:+.2f} s")
        for n, (queries, ms) in counts.items():
            print(f"merged config for {n:4d} apps   : {queries} query, {ms:.1f} ms")
    finally:
        if started:
            TEST.stop()


if __name__ == "__main__":
    main()
