"""What the rollout splitter adds to a request, against calling the same version directly, in one run.

    python benchmarks/splitter_latency.py [--requests 500] [--concurrency 8]

Uses the local test Ray cluster (started if it is not up, stopped again if this started it): deploys one version
of examples/hello.py at its internal route and the splitter (workers/on_cluster/splitter.py) in front of it at
weight 0, as a rollout's split phase places them (apps/rollouts/placement.py), then sends the same requests to
each, one at a time and then ``--concurrency`` at once, and prints p50 and p99 of both and the difference. The
baseline is the direct call, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402
from types import SimpleNamespace  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
import django  # noqa: E402

django.setup()
from apps.localdev.local_ray import TEST  # noqa: E402
from apps.rollouts.placement import rollout_apps, routes  # noqa: E402

VERSION = {
    "import_path": "examples.hello:build",
    "args": {"greeting": "v1"},
    "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def deploy(apps: list[dict]) -> None:
    url = f"{TEST.dashboard_url}/api/serve/applications/"
    body = {"http_options": {"host": "0.0.0.0", "port": TEST.serve_port}, "applications": apps}
    requests.put(url, json=body, timeout=30).raise_for_status()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        seen = requests.get(url, timeout=10).json().get("applications") or {}
        if len(seen) == len(apps) and all(a.get("status") == "RUNNING" for a in seen.values()):
            return
        time.sleep(1)
    raise SystemExit("the apps did not reach RUNNING within 300 s")


def timed(url: str, n: int, concurrency: int) -> list[float]:
    session = requests.Session()

    def one(_: int) -> float:
        t0 = time.perf_counter()
        r = session.get(url, params={"name": "b"}, timeout=30) if concurrency == 1 else requests.get(url, timeout=30)
        if r.status_code != 200:
            raise SystemExit(f"{url} answered {r.status_code}: {r.text[:200]}")
        return (time.perf_counter() - t0) * 1000

    for _ in range(20):  # warm up every proxy and connection
        one(0)
    if concurrency == 1:
        return [one(i) for i in range(n)]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    started = not TEST.is_up()
    if started:
        TEST.start(log=lambda m: None)
    try:
        app = {"name": "bench", "route_prefix": "/bench", **VERSION}
        deploy(
            rollout_apps(app, app, SimpleNamespace(phase="split", weight=0), TEST.serve_port)
        )  # as a rollout places it
        direct, split = f"{TEST.serve_url}{routes('bench')['stable']}", f"{TEST.serve_url}/bench"
        print(f"{args.requests} requests each, examples/hello.py on the local test Ray cluster")
        for concurrency in (1, args.concurrency):
            base = timed(direct, args.requests, concurrency)
            through = timed(split, args.requests, concurrency)
            print(
                f"concurrency {concurrency}: direct p50 {statistics.median(base):.1f} ms p99 "
                f"{percentile(base, 0.99):.1f} ms | through the splitter p50 {statistics.median(through):.1f} ms "
                f"p99 {percentile(through, 0.99):.1f} ms | added p50 "
                f"{statistics.median(through) - statistics.median(base):+.1f} ms "
                f"p99 {percentile(through, 0.99) - percentile(base, 0.99):+.1f} ms"
            )
        deploy([])
    finally:
        if started:
            TEST.stop()


if __name__ == "__main__":
    main()
