"""Cache hit rate from real Ray counters: a known request sequence to a multiplexed deployment."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from apps.applications.models import Application
from apps.localdev.management.commands.seed_models import write_models
from apps.metrics.services import scrape_cluster
from apps.metrics.sources import query, residency
from tests.conftest import app_body, wait_for, wait_for_steady_proxies
from tests.support.lru import lru_loads
from workers.clients import prometheus

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def ray_counter(ray_cluster, family: str, application: str) -> float:
    total = 0.0
    for target in prometheus.discover_targets(ray_cluster.dashboard_url):
        try:
            for s in prometheus.parse(prometheus.fetch(target), {family}):
                if s.labels.get("application") == application and s.name.endswith("_total"):
                    total += s.value
        except prometheus.ScrapeError:
            continue
    return total


def test_stored_hit_rate_matches_rays_counters_and_an_lru_replay(
    ray_env, ray_cluster, api, alice, team_a, grant, tmp_path
):
    grant(team_a, ray_env, "4")
    paths = write_models(tmp_path, 3)
    client = api(alice)
    name = f"mux{uuid.uuid4().hex[:6]}"  # a fresh replica, with an empty model cache, on every run
    body = app_body(
        "team-a",
        ray_env.pk,
        name,
        import_path="examples.multiplexed:app",
        deployments=[{"name": "Mux", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
    )
    app_id = client.post("/api/v1/applications/", body, format="json").json()["id"]
    for i, path in enumerate(paths, start=1):
        resp = client.post(
            "/api/v1/models/",
            {"application": app_id, "deployment": "Mux", "model_id": f"m{i}", "uri": f"file://{path}"},
            format="json",
        )
        assert resp.status_code == 201, resp.content
    wait_for(lambda: Application.objects.get(pk=app_id).state == "running", timeout=120, what="mux RUNNING")
    serve_name = f"team-a--{name}"

    def catalog_applied() -> bool:
        deployed = requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=10).json()[
            "applications"
        ]
        cfg = deployed[serve_name]["deployed_app_config"]["deployments"][0].get("user_config") or {}
        return len(cfg.get("models", {})) == 3

    wait_for(catalog_applied, what="catalog in the deployed user_config")
    start = timezone.now() - timedelta(seconds=5)
    family_requests = "ray_serve_multiplexed_get_model_requests_counter"
    family_loads = "ray_serve_multiplexed_models_load_counter"
    before_requests = ray_counter(ray_cluster, family_requests, serve_name)  # 0 on a fresh replica
    before_loads = ray_counter(ray_cluster, family_loads, serve_name)
    wait_for_steady_proxies(ray_cluster)  # every request of the sequence must reach the app
    scrape_cluster(ray_env.pk)  # baseline before the sequence

    sequence = ["m1", "m1", "m2", "m1", "m3", "m2", "m2", "m3", "m1"]
    for model in sequence:
        resp = requests.get(
            f"{ray_cluster.serve_url}/team-a/{name}", headers={"serve_multiplexed_model_id": model}, timeout=30
        )
        assert resp.status_code == 200 and resp.json()["model_id"] == model, resp.text

    wait_for(
        lambda: ray_counter(ray_cluster, family_requests, serve_name) - before_requests == 9,
        timeout=60,
        what="Ray's counters to show 9 more requests",
    )
    time.sleep(1)
    ray_requests = ray_counter(ray_cluster, family_requests, serve_name) - before_requests
    ray_loads = ray_counter(ray_cluster, family_loads, serve_name) - before_loads
    run = scrape_cluster(ray_env.pk)
    assert run.targets > 0 and run.points_written > 0

    assert ray_loads == lru_loads(sequence, slots=2) == 5
    end = timezone.now() + timedelta(seconds=1)
    step = int((end - start).total_seconds()) + 1
    stored = query(
        "cache_hit_rate", cluster=ray_env, start=start, end=end, step=step, now=timezone.now(), application=serve_name
    )
    assert len(stored) == 1 and stored[0]["labels"]["deployment"] == "Mux"
    assert stored[0]["points"][0][1] == pytest.approx(1 - ray_loads / ray_requests)
    api_series = client.get(
        f"/api/v1/metrics/?series=cache_hit_rate&application={app_id}&start={int(start.timestamp())}"
        f"&end={int(end.timestamp())}&step={step}"
    ).json()["series"]
    assert api_series[0]["points"][0][1] == pytest.approx(1 - 5 / 9)
    resident = {r["model_id"] for r in residency(ray_env, serve_name)}
    assert resident == {"m3", "m1"}  # the two most recently used


def test_rays_metrics_agents_send_their_pages_gzipped_and_they_parse_the_same(ray_cluster):
    """Every endpoint Ray's service discovery names compresses its page when asked (prometheus_client, as Ray serves
    it), and the control plane reads the same series from it as from the plain page."""
    import http.client

    from apps.metrics import services

    wanted = set(services.FAMILIES)

    def series(page: str) -> set:
        return set(services._normalise(list(prometheus.parse(page, wanted))))

    compared = 0
    for target in prometheus.discover_targets(ray_cluster.dashboard_url):
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        answer = conn.getresponse()
        wire = answer.read()
        conn.close()
        assert answer.getheader("Content-Encoding") == "gzip", target
        for _ in range(3):  # a series may appear between two reads (a replica starting): read both again
            plain, packed = prometheus.fetch(target, gzip=False), prometheus.fetch(target)
            if series(plain) == series(packed):
                break
        assert series(packed) == series(plain), target
        assert len(wire) * 5 < len(plain.encode()), (target, len(wire), len(plain))
        compared += bool(series(packed))
    assert compared >= 2, "no endpoint exported a series the control plane stores"
