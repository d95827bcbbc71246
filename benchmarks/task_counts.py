"""Celery tasks per minute: an idle cluster with 50 settled apps, then a burst of writes.

    python benchmarks/task_counts.py [--apps 50] [--window 120] [--burst 20]

A real Celery worker (threads, in this process, in-memory broker) and a beat that sends every entry of the real beat
schedule (controlplane/celery.py: reconcile, scrape, rollups, alerts, waste reports, starter grants, compaction
policy) at its real interval, against a fake
Ray dashboard that echoes configs as Ray 2.60 does (integers come back as floats) and reports apps RUNNING
after two reads. The apps use integer resources (num_cpus: 1, num_gpus: 0 or 1), as real configs do.

The baseline, printed beside the measurement, is the floor an idle cluster can cost: the beat's own tasks and
one reconcile and one scrape per cluster per interval. Anything above it on an idle cluster is waste.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["CONTROLPLANE_VAR_DIR"] = tempfile.mkdtemp(prefix="cp-bench-")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
os.environ.pop("DATABASE_URL", None)
os.environ["CELERY_BROKER_URL"] = "memory://"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402


def spec(i: int) -> dict:
    return {
        "route_prefix": f"/bench/app{i}",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 1, "num_gpus": i % 2}}],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--window", type=float, default=120.0, help="seconds measured idle, and after the burst")
    parser.add_argument("--burst", type=int, default=20, help="writes in the burst")
    parser.add_argument("--settle-timeout", type=float, default=90.0)
    args = parser.parse_args()

    from celery.contrib.testing.worker import start_worker
    from celery.signals import task_postrun, task_prerun
    from django.contrib.auth import get_user_model

    from apps.applications.models import Application
    from apps.applications.services import application_create, application_update
    from apps.clusters.services import cluster_create
    from apps.quotas.services import quota_set
    from apps.teams.services import team_create
    from controlplane.celery import app as celery_app
    from tests.fake_ray import FakeRay

    call_command("migrate", verbosity=0)
    ray = FakeRay(settle_after=2).start()
    user = get_user_model().objects.create_user("bench", is_staff=True)
    team = team_create(actor=user, slug="bench", name="Bench")
    cluster = cluster_create(
        actor=user,
        data={"name": "bench", "kind": "ray", "dashboard_url": ray.url},
        pools=[{"name": "a100", "resource": "GPU", "capacity": 1000}],
    )
    # a benchmark's one team runs more apps than a team's default cap on a shared cluster
    type(cluster).objects.filter(pk=cluster.pk).update(team_max_apps=100_000, team_max_replicas=1_000_000)
    cluster.refresh_from_db()
    quota_set(actor=user, team=team, cluster=cluster, pool_name="a100", gpus=1000)

    counts: Counter[str] = Counter()
    longest: dict[str, float] = {}
    started_at: dict[str, float] = {}
    lock = threading.Lock()

    @task_prerun.connect
    def _pre(task_id=None, task=None, **_):
        with lock:
            counts[task.name.rsplit(".", 1)[-1]] += 1
            started_at[task_id] = time.monotonic()

    @task_postrun.connect
    def _post(task_id=None, task=None, **_):
        with lock:
            spent = time.monotonic() - started_at.pop(task_id, time.monotonic())
            name = task.name.rsplit(".", 1)[-1]
            longest[name] = max(longest.get(name, 0.0), spent)

    stop = threading.Event()

    def beat() -> None:
        # every entry of the real beat schedule (controlplane/celery.py), at its real interval
        entries = {name: (e["task"], float(e["schedule"])) for name, e in celery_app.conf.beat_schedule.items()}
        due = dict.fromkeys(entries, 0.0)
        start = time.monotonic()
        while not stop.is_set():
            now = time.monotonic() - start
            for name, (task, every) in entries.items():
                if now >= due[name]:
                    celery_app.send_task(task)
                    due[name] += every
            stop.wait(0.2)

    celery_app.conf.task_always_eager = False
    with start_worker(celery_app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=30):
        for i in range(args.apps):
            application_create(actor=user, team=team, cluster=cluster, name=f"app{i}", spec=spec(i))
        beat_thread = threading.Thread(target=beat, daemon=True)
        beat_thread.start()
        t0 = time.monotonic()
        settled = False
        while time.monotonic() - t0 < args.settle_timeout:
            if not Application.objects.exclude(state="running").exists():
                settled = True
                break
            time.sleep(1)
        settle_s = time.monotonic() - t0
        time.sleep(5)  # let the poller notice and stop

        def window(label: str) -> dict[str, float]:
            with lock:
                counts.clear()
                longest.clear()
            time.sleep(args.window)
            with lock:
                per_min = {k: v * 60 / args.window for k, v in counts.items()}
                worst = dict(longest)
            total = sum(per_min.values())
            print(f"\n{label}: {total:.1f} tasks/min")
            for name, rate in sorted(per_min.items(), key=lambda kv: -kv[1]):
                print(f"  {name:<24} {rate:7.1f}/min   longest {worst.get(name, 0):6.2f} s")
            return per_min

        print(
            f"{args.apps} apps with integer resources: all RUNNING in the control plane: {settled} ({settle_s:.0f} s)"
        )
        idle = window(f"idle, {args.window:.0f} s")
        pushes_before = len(ray.puts)
        for i in range(args.burst):
            s = spec(i)
            s["deployments"][0]["num_replicas"] = 2
            application_update(actor=user, application=Application.objects.get(name=f"app{i}"), spec=s)
        burst = window(f"after a burst of {args.burst} writes, {args.window:.0f} s")
        print(f"  pushes for the burst: {len(ray.puts) - pushes_before}")
        stop.set()
        beat_thread.join()

    clusters = 1
    beat_rate = sum(60 / float(e["schedule"]) for e in celery_app.conf.beat_schedule.values())
    floor = beat_rate + clusters * (60 / settings.RECONCILE_INTERVAL_S + 60 / settings.SCRAPE_INTERVAL_S)
    print(
        f"\nbaseline (the beat's {len(celery_app.conf.beat_schedule)} entries, {beat_rate:.1f}/min, and one reconcile "
        f"and one scrape per cluster): {floor:.1f} tasks/min"
    )
    print(f"idle: {sum(idle.values()):.1f} tasks/min, {sum(idle.values()) / floor:.2f} x the baseline")
    print(f"burst: {sum(burst.values()):.1f} tasks/min, {sum(burst.values()) / floor:.2f} x the baseline")
    ray.stop()


if __name__ == "__main__":
    main()
