"""API write to the PUT arriving at the cluster, through the embedded broker and through Redis, in one run.

    python benchmarks/broker_latency.py [--writes 60] [--redis redis://127.0.0.1:6379/14]

For each broker: a real Celery worker process (threads) and this process as the web tier (the DRF test client),
sharing a fresh SQLite database; a fake dashboard records when each PUT arrives. Writes are one at a time, a
quarter of a second apart, as people and CI pipelines make them. Redis is skipped (said so) when it does not
answer. The target for the embedded broker: p95 at or under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VAR = tempfile.mkdtemp(prefix="cp-bench-")
os.environ["CONTROLPLANE_VAR_DIR"] = VAR
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
os.environ.pop("DATABASE_URL", None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(broker: str, writes: int) -> list[float]:
    os.environ["CELERY_BROKER_URL"] = broker
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from apps.clusters.models import Cluster
    from apps.clusters.services import cluster_create
    from apps.quotas.services import quota_set
    from apps.teams.services import issue_token, team_create
    from controlplane.celery import app as celery_app
    from tests.fake_ray import FakeRay

    celery_app.conf.broker_url = broker
    call_command("migrate", verbosity=0)
    ray = FakeRay().start()
    arrivals: list[float] = []
    real_put = ray.put

    def timed_put(config: dict) -> str | None:
        arrivals.append(time.perf_counter())
        return real_put(config)

    ray.put = timed_put
    user = get_user_model().objects.create_user(f"bench{time.time_ns()}", is_staff=True)
    slug = f"b{time.time_ns() % 10**8}"
    team = team_create(actor=user, slug=slug, name="Bench")
    cluster = cluster_create(
        actor=user,
        data={"name": slug, "kind": "ray", "dashboard_url": ray.url},
        pools=[{"name": "a100", "resource": "GPU", "capacity": 100}],
    )
    # a benchmark's one team runs more apps than a team's default cap on a shared cluster
    type(cluster).objects.filter(pk=cluster.pk).update(team_max_apps=100_000, team_max_replicas=1_000_000)
    cluster.refresh_from_db()
    Cluster.objects.filter(pk=cluster.pk).update(inventory_taken_at=cluster.created_at)
    quota_set(actor=user, team=team, cluster=cluster, pool_name="a100", gpus=100)
    _, secret = issue_token(user=user, name="bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    env = {**os.environ, "CELERY_BROKER_URL": broker, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "controlplane",
            "worker",
            "-P",
            "threads",
            "-c",
            "4",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(4)  # the worker connects
        latencies = []
        api_ms: list[float] = []
        for i in range(writes + 5):
            body = {
                "team": slug,
                "cluster": cluster.pk,
                "name": f"app{i}",
                "route_prefix": f"/{slug}/app{i}",
                "import_path": "examples.hello:app",
                "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
            }
            before = len(arrivals)
            t0 = time.perf_counter()
            assert client.post("/api/v1/applications/", body, format="json").status_code == 201
            api_ms.append((time.perf_counter() - t0) * 1000)
            while len(arrivals) == before and time.perf_counter() - t0 < 10:
                time.sleep(0.001)
            if i >= 5 and len(arrivals) > before:  # the first few warm the worker up
                latencies.append((arrivals[before] - t0) * 1000)
            time.sleep(0.25)
        after = [total - api for total, api in zip(latencies, api_ms[5:], strict=False)]
        print(
            f"(the API call itself: p50 {statistics.median(api_ms):.1f} p95 {percentile(api_ms, 0.95):.1f} ms; "
            f"from its answer to the PUT: p50 {statistics.median(after):.1f} p95 {percentile(after, 0.95):.1f} ms)",
            file=sys.stderr,
        )
        return latencies
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
        ray.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    parser.add_argument("--only", choices=["embedded", "redis"])
    args = parser.parse_args()
    if args.only is None:  # each broker in its own process: Django and Celery are configured once per process
        results = {}
        for name in ("embedded", "redis"):
            out = subprocess.run(
                [sys.executable, __file__, "--writes", str(args.writes), "--redis", args.redis, "--only", name],
                capture_output=True,
                text=True,
            )
            results[name] = (
                out.stdout.strip().splitlines()[-1] if out.stdout.strip() else f"failed: {out.stderr[-300:]}"
            )
        print(f"API write to the PUT arriving, {args.writes} writes, one at a time:")
        for name, line in results.items():
            print(f"  {name:<9} {line}")
        return
    if args.only == "redis":
        import redis

        try:
            redis.Redis.from_url(args.redis, socket_connect_timeout=1).ping()
        except Exception as exc:
            print(f"skipped: Redis at {args.redis} does not answer ({type(exc).__name__})")
            return
        broker = args.redis
    else:
        broker = f"sqlite://{Path(VAR) / 'broker.sqlite3'}"
    ms = run(broker, args.writes)
    p50, p95 = statistics.median(ms), percentile(ms, 0.95)
    print(f"p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   max {max(ms):6.1f} ms   ({len(ms)} writes)")


if __name__ == "__main__":
    main()
