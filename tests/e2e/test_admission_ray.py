"""Issue 23 on a real Ray cluster: the quota holds against what Ray really runs, one team's bad app costs the
others one extra push, and the control plane talks to a Ray started with token authentication."""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from apps.applications.models import Application
from apps.clusters.models import SyncRun
from tests.conftest import app_body, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def ray_apps(ray_cluster, headers: dict | None = None) -> dict:
    url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    return requests.get(url, timeout=10, headers=headers or {}).json().get("applications") or {}


def gpus_in_use(ray_cluster) -> float:
    """Logical GPUs Ray holds for replicas now, from its own node list."""
    data = requests.get(f"{ray_cluster.dashboard_url}/api/v0/nodes?limit=100&detail=true", timeout=10).json()
    nodes = data["data"]["result"]["result"]
    return sum(
        float((n.get("resources_total") or {}).get("GPU", 0))
        - float((n.get("resources_available") or {}).get("GPU", 0))
        for n in nodes
        if n.get("state") == "ALIVE" and "resources_available" in n
    )


def test_gpus_the_code_asks_for_are_held_to_the_quota(ray_env, ray_cluster, api, alice, bob, team_a, team_b, grant):
    """examples/greedy.py asks in code for 3 replicas x 1 GPU; its config lists the deployment without either.
    Ray 2.60 runs the code's options (3 GPUs on a 0.5 quota); the control plane sees Ray's own figure once the app
    is deployed, holds it back and tells the team, and team B's app runs on untouched."""
    grant(team_a, ray_env, "0.5")
    grant(team_b, ray_env, "4")
    good = api(bob).post("/api/v1/applications/", app_body("team-b", ray_env.pk, "hello"), format="json").json()
    wait_for(lambda: Application.objects.get(pk=good["id"]).state == "running", what="team B's app RUNNING")
    started = time.monotonic()
    body = app_body("team-a", ray_env.pk, "greedy", import_path="examples.greedy:app", deployments=[{"name": "Hog"}])
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 201, resp.content  # the config alone asks for no GPU: admitted
    greedy = resp.json()["id"]

    def held() -> bool:
        app = Application.objects.get(pk=greedy)
        return bool(app.fault) and "team-a--greedy" not in ray_apps(ray_cluster)

    wait_for(held, timeout=180, what="the greedy app held back and gone from Ray")
    took = time.monotonic() - started
    app = Application.objects.get(pk=greedy)
    assert app.state == "deploy_failed" and "Ray runs 3 GPU (admitted 0)" in app.fault, app.fault
    assert app.observed_demand == {"GPU": "3"}
    detail = api(alice).get(f"/api/v1/applications/{greedy}/").json()
    assert detail["state"] == "deploy_failed" and "List every deployment" in detail["status_message"]
    assert ray_apps(ray_cluster)["team-b--hello"]["status"] == "RUNNING"
    wait_for(lambda: gpus_in_use(ray_cluster) <= 0.5, timeout=60, what="the 3 GPUs released")
    print(f"\ngreedy app: 3 GPUs on a 0.5 quota ran for {took:.1f} s from the write until it was gone from Ray")


def test_a_bad_app_costs_another_teams_app_one_extra_push(ray_env, ray_cluster, api, alice, bob, team_a, team_b, grant):
    """Team A's app names an autoscaling policy in a module Ray's dashboard cannot import: Ray refuses the whole
    merged PUT (HTTP 500). Team B's app in the same push is deployed by the next one."""
    grant(team_a, ray_env, "4")
    grant(team_b, ray_env, "4")
    from apps.deploys.locks import acquire_lock, release_lock

    owner = acquire_lock(cluster_id=ray_env.pk, owner="test-holds-the-push")  # both writes land in one push
    policy = {"max_replicas": 2, "policy": {"policy_function": "team_a_missing.scale:policy"}}
    dep = {"name": "Hello", "autoscaling_config": policy, "ray_actor_options": {"num_cpus": 0.1}}
    bad = app_body("team-a", ray_env.pk, "bad", deployments=[dep])
    assert api(alice).post("/api/v1/applications/", bad, format="json").status_code == 201
    good = api(bob).post("/api/v1/applications/", app_body("team-b", ray_env.pk, "good"), format="json").json()
    started = time.monotonic()
    release_lock(cluster_id=ray_env.pk, owner=owner)
    from django.db import transaction

    from apps.clusters.services import request_sync

    with transaction.atomic():
        request_sync(cluster_id=ray_env.pk)
    wait_for(lambda: Application.objects.get(pk=good["id"]).state == "running", timeout=180, what="B RUNNING")
    took = time.monotonic() - started
    runs = list(SyncRun.objects.filter(cluster=ray_env, app_count__gt=0).order_by("id"))
    refused = [r for r in runs if r.state == "failed"]
    assert len(refused) == 1 and list(refused[0].faults) == ["team-a--bad"], [(r.state, r.faults) for r in runs]
    assert "team_a_missing" in refused[0].faults["team-a--bad"]
    after = [r for r in runs if r.pk > refused[0].pk]
    assert after and after[0].state == "succeeded"  # the very next push carried team B's app
    bad_app = Application.objects.get(name="bad")
    assert bad_app.state == "deploy_failed" and "team_a_missing" in bad_app.fault
    assert "team-a--bad" not in ray_apps(ray_cluster) and ray_apps(ray_cluster)["team-b--good"]["status"] == "RUNNING"
    # what team B reads of the refused push: nothing of team A's
    run = api(bob).get(f"/api/v1/sync-runs/{refused[0].pk}/").json()
    assert "team_a_missing" not in run["error"] and "yours were not" in run["error"]
    print(f"\ngood app behind a bad one: RUNNING {took:.1f} s after the push started, {len(runs)} pushes in all")


@pytest.fixture(scope="module")
def token_ray():
    """A single-node Ray started with RAY_AUTH_MODE=token (its own ports), for the control plane's calls."""
    from apps.localdev.local_ray import LocalRayCluster

    token = secrets.token_hex(32)
    cluster = LocalRayCluster(
        temp_dir="/tmp/ray-cp-token",
        gcs_port=6395,
        dashboard_port=8285,
        serve_port=8015,
        client_port=10021,
        node_port_base=25000,
        metrics_port_base=8190,
        head_cpus=2,
        workers=[],
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
    )
    cluster.stop()
    cluster.start(log=lambda m: None)
    yield cluster, token
    cluster.stop()


def register_token_ray(make_cluster, ray, token: str):
    """The token-auth Ray registered as staff would: its dashboard token held (encrypted) by the control plane."""
    cluster = make_cluster(
        name="token-ray",
        dashboard_url=ray.dashboard_url,
        serve_url=ray.serve_url,
        http_port=ray.serve_port,
        auth_token=token,
        gpus="0",
        inventoried=False,
    )
    cluster.pools.update(resource="GPU")
    return cluster


def test_the_control_plane_talks_to_a_ray_with_token_authentication(
    token_ray, celery_worker, make_cluster, api, alice, team_a, grant
):
    ray, token = token_ray
    url = f"{ray.dashboard_url}/api/serve/applications/"
    assert requests.get(url, timeout=10).status_code == 401  # the dashboard wants the token
    assert requests.get(url, timeout=10, headers={"Authorization": "Bearer wrong"}).status_code == 403
    cluster = register_token_ray(make_cluster, ray, token)
    body = app_body(
        "team-a", cluster.pk, "hello", deployments=[{"name": "Hello", "ray_actor_options": {"num_cpus": 0.1}}]
    )
    created = api(alice).post("/api/v1/applications/", body, format="json")
    assert created.status_code == 201, created.content
    wait_for(lambda: Application.objects.get(pk=created.json()["id"]).state == "running", timeout=180, what="RUNNING")
    assert ray_apps(ray, ray.auth_headers)["team-a--hello"]["status"] == "RUNNING"
    assert requests.get(f"{ray.serve_url}/team-a/hello?name=t", timeout=10).json() == {"message": "hello, t"}
    cluster.refresh_from_db()
    assert cluster.health == "healthy" and cluster.inventory_taken_at is not None
