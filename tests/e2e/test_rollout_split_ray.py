"""Issue 27's traffic split on real Ray: the rollout splitter (workers/on_cluster/splitter.py), placed as a
rollout's ``split`` phase places it (apps/rollouts/placement.py), shares requests between two versions by weight,
moves to a new weight and back without failing one request, keeps a multiplexed model's requests on one side, and
its added latency is measured against calling the version directly. Here the configs go to Ray's REST API
directly; tests/e2e/test_rollouts_ray.py runs whole rollouts through the control plane."""

from __future__ import annotations

import statistics
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from apps.rollouts.placement import rollout_apps, routes
from tests.conftest import reset_serve, wait_for, wait_for_every_proxy
from workers.on_cluster.splitter import SIDE_HEADER, share

pytestmark = [pytest.mark.ray]

STABLE, CANARY = routes("web")["stable"], routes("web")["canary"]


def version(greeting: str) -> dict:
    return {
        "import_path": "examples.hello:build",
        "args": {"greeting": greeting},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
    }


def config(ray_cluster, weight: float) -> dict:
    apps = rollout_apps(
        {"name": "web", "route_prefix": "/team-a/web", **version("v1")},
        {"name": "web", "route_prefix": "/team-a/web", **version("v2")},
        SimpleNamespace(phase="split", weight=weight),
        ray_cluster.serve_port,
    )
    return {"http_options": {"host": "0.0.0.0", "port": ray_cluster.serve_port}, "applications": apps}


def test_the_splitter_shares_by_weight_and_steps_without_dropping_a_request(ray_cluster):
    reset_serve(ray_cluster)
    apps_url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    url = f"{ray_cluster.serve_url}/team-a/web"

    def apply(weight: float) -> None:
        requests.put(apps_url, json=config(ray_cluster, weight), timeout=30).raise_for_status()

        def settled() -> bool:
            apps = requests.get(apps_url, timeout=10).json().get("applications") or {}
            web = apps.get("web@split") or {}
            splitter = (web.get("deployments") or {}).get("Splitter") or {}
            user_config = ((web.get("deployed_app_config") or {}).get("deployments") or [{}])[0].get("user_config")
            return (
                len(apps) == 3
                and all(a.get("status") == "RUNNING" for a in apps.values())
                and splitter.get("status") == "HEALTHY"
                and user_config == {"weight": float(weight)}
            )

        wait_for(settled, timeout=180, interval=0.5, what=f"weight {weight} applied")

    apply(0)
    wait_for_every_proxy(ray_cluster, [url, f"{ray_cluster.serve_url}{STABLE}", f"{ray_cluster.serve_url}{CANARY}"])

    # Traffic all along, across every step and the rollback: not one request may fail.
    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                r = requests.get(url, params={"name": "t"}, timeout=30)
                if r.status_code != 200:
                    failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except requests.RequestException as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            sent[0] += 1

    background = threading.Thread(target=traffic, daemon=True)
    background.start()
    shares = {}
    try:
        for weight in (0, 10, 50, 100, 0):  # three steps up, then a rollback to the running version
            apply(weight)
            answers = [requests.get(url, params={"name": "t"}, timeout=30) for _ in range(200)]
            assert all(a.status_code == 200 for a in answers)
            canary = [a for a in answers if a.headers[SIDE_HEADER] == "canary"]
            assert all(a.json()["message"] == "v2, t" for a in canary)  # the side that answered is that version
            assert all(a.json()["message"] == "v1, t" for a in answers if a not in canary)
            shares[weight if weight not in shares else "rollback"] = 100 * len(canary) / len(answers)
    finally:
        stop.set()
        background.join(timeout=60)
    print(f"\ncanary share by weight: {shares}; background requests {sent[0]}, failed {len(failures)}")
    assert failures == [], failures[:5]
    assert sent[0] > 100
    assert shares[0] == 0 and shares[100] == 100 and shares["rollback"] == 0
    assert abs(shares[10] - 10) <= 7 and abs(shares[50] - 50) <= 12  # 200 draws: about 3 standard deviations

    # A multiplexed model's requests stay on one side within a step, the side its hash picks.
    apply(50)
    for model in ("m1", "m2", "m3", "resnet-50", "bert-base"):
        sides = {
            requests.get(url, headers={"serve_multiplexed_model_id": model}, timeout=30).headers[SIDE_HEADER]
            for _ in range(10)
        }
        assert sides == {"canary" if share(model) < 50 else "stable"}, (model, sides)

    # What the splitter adds: the same request through it and to the version directly, one after the other.
    def latencies(target: str) -> list[float]:
        out = []
        with requests.Session() as s:
            for _ in range(300):
                t0 = time.perf_counter()
                assert s.get(target, params={"name": "t"}, timeout=30).status_code == 200
                out.append((time.perf_counter() - t0) * 1000)
        return sorted(out)

    apply(0)
    direct = latencies(f"{ray_cluster.serve_url}{STABLE}")
    split = latencies(url)
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]  # noqa: E731
    print(
        f"latency direct p50 {statistics.median(direct):.1f} ms p99 {p99(direct):.1f} ms; "
        f"through the splitter p50 {statistics.median(split):.1f} ms p99 {p99(split):.1f} ms"
    )
    reset_serve(ray_cluster)
