"""Compaction against real Ray (head + 3 workers with logical GPUs), through the API, under steady traffic."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from apps.applications.models import Application
from apps.compaction.models import CompactionPlan
from apps.deploys.sync import observe_cluster
from tests.conftest import app_body, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.drains_nodes, pytest.mark.django_db(transaction=True)]


def ray_apps(ray_cluster) -> dict:
    return (
        requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=10).json().get("applications")
        or {}
    )


def test_plan_and_execute_compaction_without_dropping_a_request(ray_env, ray_cluster, api, alice, team_a, grant, staff):
    grant(team_a, ray_env, "12")
    client = api(alice)
    # Fill all three workers, then scale down: replicas are left scattered, as after traffic falls.
    specs = {"big": (8, 1.0), "small": (3, 0.5)}
    ids = {}
    for name, (replicas, gpus) in specs.items():
        body = app_body(
            "team-a",
            ray_env.pk,
            name,
            deployments=[
                {"name": "Hello", "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}
            ],
        )
        resp = client.post("/api/v1/applications/", body, format="json")
        assert resp.status_code == 201, resp.content
        ids[name] = resp.json()["id"]
    wait_for(
        lambda: all(Application.objects.get(pk=i).state == "running" for i in ids.values()),
        timeout=180,
        what="apps RUNNING",
    )
    specs["big"] = (2, 1.0)
    two = [{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1.0}}]
    assert client.patch(f"/api/v1/applications/{ids['big']}/", {"deployments": two}, format="json").status_code == 200

    def scaled_down() -> bool:
        reps = ray_apps(ray_cluster)["team-a--big"]["deployments"]["Hello"]["replicas"]
        return len(reps) == 2 and Application.objects.get(pk=ids["big"]).state == "running"

    wait_for(scaled_down, timeout=120, what="big scaled down to 2 replicas")
    observe_cluster(ray_env.pk)
    used = {r["node_id"] for a in ray_apps(ray_cluster).values() for r in a["deployments"]["Hello"]["replicas"]}
    assert len(used) >= 2, "no fragmentation to compact"

    admin = api(staff)
    resp = admin.post("/api/v1/compaction/plans/", {"cluster": ray_env.pk}, format="json")
    assert resp.status_code == 201, resp.content
    plan = resp.json()
    assert plan["state"] == "planned" and len(plan["nodes_to_drain"]) >= 1, plan
    assert float(plan["gpus_freed"]) >= 4 and plan["moves"]
    assert api(alice).post("/api/v1/compaction/plans/", {"cluster": ray_env.pk}, format="json").status_code == 403

    results = {"ok": 0, "failed": 0, "errors": []}
    stop = threading.Event()

    def traffic() -> None:
        session = requests.Session()
        while not stop.is_set():
            for route in ("/team-a/big", "/team-a/small"):
                try:
                    r = session.get(f"{ray_cluster.serve_url}{route}", timeout=10)
                    ok = r.status_code == 200
                except requests.RequestException as exc:
                    ok = False
                    results["errors"].append(str(exc)[:200])
                results["ok" if ok else "failed"] += 1
            time.sleep(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    time.sleep(1)
    resp = admin.post(f"/api/v1/compaction/plans/{plan['id']}/execute/")
    assert resp.status_code == 202 and resp.json()["state"] == "executing"
    assert admin.post(f"/api/v1/compaction/plans/{plan['id']}/execute/").status_code == 400
    final = wait_for(
        lambda: (p := CompactionPlan.objects.get(pk=plan["id"])).state in ("succeeded", "failed") and p,
        timeout=240,
        what="compaction finished",
    )
    time.sleep(1)
    stop.set()
    sender.join(timeout=15)
    steps = list(final.steps.values("state", "message"))
    assert final.state == "succeeded", (final.error, steps)

    apps = ray_apps(ray_cluster)
    drained = set(plan["nodes_to_drain"])
    for name, (replicas, _) in specs.items():
        app = apps[f"team-a--{name}"]
        assert app["status"] == "RUNNING"
        reps = [r for r in app["deployments"]["Hello"]["replicas"] if r["state"] == "RUNNING"]
        assert len(reps) == replicas, (name, reps)
        assert not {r["node_id"] for r in reps} & drained, "a drained node still holds replicas"
    print(
        f"\ncompaction: {len(plan['nodes_to_drain'])} node(s) drained, {len(plan['moves'])} moves, "
        f"{results['ok']} requests OK, {results['failed']} failed; steps: {[st['message'] for st in steps]}"
    )
    assert results["failed"] == 0, results["errors"][:5]
    assert results["ok"] > 50
    detail = admin.get(f"/api/v1/compaction/plans/{plan['id']}/").json()
    assert all(s["state"] == "succeeded" and "emptied in" in s["message"] for s in detail["steps"])
