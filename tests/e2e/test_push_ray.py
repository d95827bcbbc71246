"""The push against a real local Ray cluster, with a real Celery worker (in a thread of this process)."""

from __future__ import annotations

import threading

import pytest
import requests

from apps.applications.models import Application
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.models import PushState
from tests.conftest import app_body, wait_for, wait_for_steady_proxies

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def ray_apps(ray_cluster) -> dict:
    return (
        requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=10).json().get("applications")
        or {}
    )


def app_state(app_id: int) -> str:
    return Application.objects.get(pk=app_id).state


def serve_get(ray_cluster, route: str) -> requests.Response:
    wait_for_steady_proxies(ray_cluster)
    return requests.get(f"{ray_cluster.serve_url}{route}", timeout=10)


def test_two_teams_deploy_update_and_delete_without_touching_each_other(
    ray_env, ray_cluster, api, alice, bob, team_a, team_b, grant
):
    grant(team_a, ray_env, "4")
    grant(team_b, ray_env, "4")
    results: dict[str, dict] = {}

    def create(user, team):
        body = app_body(team, ray_env.pk, "hello", args={"greeting": f"hi from {team}"})
        body["import_path"] = "examples.hello:build"
        resp = api(user).post("/api/v1/applications/", body, format="json")
        results[team] = {**resp.json(), "http": resp.status_code}

    threads = [threading.Thread(target=create, args=a) for a in ((alice, "team-a"), (bob, "team-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["team-a"]["http"] == results["team-b"]["http"] == 201, results
    a_id, b_id = results["team-a"]["id"], results["team-b"]["id"]
    wait_for(lambda: app_state(a_id) == "running" and app_state(b_id) == "running", what="both apps RUNNING")
    assert serve_get(ray_cluster, "/team-a/hello?name=x").json() == {"message": "hi from team-a, x"}
    assert serve_get(ray_cluster, "/team-b/hello?name=x").json() == {"message": "hi from team-b, x"}

    b_replicas = {r["replica_id"] for r in ray_apps(ray_cluster)["team-b--hello"]["deployments"]["Hello"]["replicas"]}
    resp = api(alice).patch(
        f"/api/v1/applications/{a_id}/",
        {
            "deployments": [
                {"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}
            ]
        },
        format="json",
    )
    assert resp.status_code == 200
    wait_for(
        lambda: (
            len(ray_apps(ray_cluster)["team-a--hello"]["deployments"]["Hello"]["replicas"]) == 2
            and app_state(a_id) == "running"
        ),
        what="team-a scaled to 2 replicas",
    )
    after = {r["replica_id"] for r in ray_apps(ray_cluster)["team-b--hello"]["deployments"]["Hello"]["replicas"]}
    assert after == b_replicas, "updating team-a restarted team-b's replicas"

    status = api(alice).get(f"/api/v1/applications/{a_id}/").json()["status"]
    nodes = {r["node_id"] for r in status["deployments"]["Hello"]["replicas"]}
    assert len(status["deployments"]["Hello"]["replicas"]) == 2 and all(nodes)

    assert api(alice).delete(f"/api/v1/applications/{a_id}/").status_code == 204
    wait_for(lambda: "team-a--hello" not in ray_apps(ray_cluster), what="team-a app removed from Ray")
    assert not Application.objects.filter(pk=a_id).exists()
    assert serve_get(ray_cluster, "/team-b/hello").status_code == 200
    assert ray_apps(ray_cluster)["team-b--hello"]["status"] == "RUNNING"


def test_twenty_concurrent_writes_from_five_teams_lose_nothing(ray_env, ray_cluster, api, make_user, make_team, grant):
    clients = []
    for i in range(5):
        owner = make_user(f"owner{i}")
        team = make_team(f"t{i}", owner)
        grant(team, ray_env, "8")
        clients.append((api(owner), f"t{i}"))
    statuses: list[int] = []
    lock = threading.Lock()

    def write(client, team, n):
        body = app_body(team, ray_env.pk, f"app{n}")
        body["deployments"] = [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.01}}]
        resp = client.post("/api/v1/applications/", body, format="json")
        with lock:
            statuses.append(resp.status_code)

    threads = [threading.Thread(target=write, args=(c, t, n)) for c, t in clients for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [201] * 20
    expected = {f"t{i}--app{n}" for i in range(5) for n in range(4)}

    def on_ray() -> set:
        return {name for name, a in ray_apps(ray_cluster).items() if a.get("deployed_app_config")} & expected

    wait_for(lambda: on_ray() == expected, timeout=120, what="all 20 apps in Ray's config")
    cluster = Cluster.objects.get(pk=ray_env.pk)
    wait_for(
        lambda: PushState.objects.get(pk=ray_env.pk).pushed_generation == cluster.desired_generation,
        what="last generation pushed",
    )
    pushes = SyncRun.objects.filter(cluster=ray_env, state=SyncRun.State.SUCCEEDED).count()
    assert pushes < 20, f"20 writes made {pushes} pushes: bursts should coalesce"


def test_ray_down_during_deploy_loses_nothing_and_reconcile_repairs(
    ray_env, ray_cluster, api, alice, team_a, grant, settings
):
    from workers.tasks.sync import reconcile_cluster

    grant(team_a, ray_env, "4")
    dead = Cluster.objects.get(pk=ray_env.pk)
    good_url = dead.dashboard_url
    # The dashboard's port stops answering, exactly as when the head is down.
    Cluster.objects.filter(pk=ray_env.pk).update(dashboard_url="http://127.0.0.1:9")
    resp = api(alice).post("/api/v1/applications/", app_body("team-a", ray_env.pk, "survivor"), format="json")
    assert resp.status_code == 201
    app_id = resp.json()["id"]
    failed = wait_for(
        lambda: SyncRun.objects.filter(cluster=ray_env, state=SyncRun.State.FAILED).first(), what="a failed SyncRun"
    )
    assert "Cannot reach the Ray dashboard" in failed.error and "connection refused" in failed.error
    runs = api(alice).get(f"/api/v1/sync-runs/?cluster={ray_env.pk}").json()["results"]
    # a team reads that Ray did not answer; Ray's own text (its address) is staff's
    assert any(r["state"] == "failed" and "Ray did not answer" in r["error"] for r in runs)
    assert not any("127.0.0.1" in r["error"] for r in runs)
    staff_runs = api(ray_env_staff()).get(f"/api/v1/sync-runs/?cluster={ray_env.pk}").json()["results"]
    assert any(r["state"] == "failed" and "Cannot reach" in r["error"] for r in staff_runs)
    assert Application.objects.get(pk=app_id).current_revision is not None
    assert Cluster.objects.get(pk=ray_env.pk).health == "unreachable"

    Cluster.objects.filter(pk=ray_env.pk).update(dashboard_url=good_url)
    reconcile_cluster.delay(ray_env.pk)  # what beat does every RECONCILE_INTERVAL_S
    wait_for(lambda: app_state(app_id) == "running", what="app RUNNING after Ray came back")
    assert "team-a--survivor" in ray_apps(ray_cluster)


def test_deploy_failed_shows_rays_message_and_others_keep_running(ray_env, ray_cluster, api, alice, team_a, grant):
    grant(team_a, ray_env, "4")
    client = api(alice)
    good = client.post("/api/v1/applications/", app_body("team-a", ray_env.pk, "good"), format="json").json()
    wait_for(lambda: app_state(good["id"]) == "running", what="good app RUNNING")
    bad_body = app_body("team-a", ray_env.pk, "bad", import_path="examples.broken:app")
    bad = client.post("/api/v1/applications/", bad_body, format="json").json()
    wait_for(lambda: app_state(bad["id"]) == "deploy_failed", timeout=120, what="bad app DEPLOY_FAILED")
    detail = client.get(f"/api/v1/applications/{bad['id']}/").json()
    assert "cannot be imported on purpose" in detail["status_message"]
    assert app_state(good["id"]) == "running"
    assert serve_get(ray_cluster, "/team-a/good").status_code == 200


def test_drift_is_detected_and_repaired(ray_env, ray_cluster, api, alice, team_a, grant):
    from workers.tasks.sync import reconcile_cluster

    grant(team_a, ray_env, "4")
    app = api(alice).post("/api/v1/applications/", app_body("team-a", ray_env.pk, "steady"), format="json").json()
    wait_for(lambda: app_state(app["id"]) == "running", what="app RUNNING")
    # Someone PUTs a config behind the control plane's back: our app is gone, a rogue app appears.
    rogue = {"applications": [{"name": "rogue", "route_prefix": "/rogue", "import_path": "examples.hello:app"}]}
    requests.put(f"{ray_cluster.dashboard_url}/api/serve/applications/", json=rogue, timeout=10).raise_for_status()
    wait_for(lambda: "team-a--steady" not in ray_apps(ray_cluster), what="app removed by the rogue PUT")
    reconcile_cluster.delay(ray_env.pk)  # what beat does every RECONCILE_INTERVAL_S
    run = wait_for(
        lambda: SyncRun.objects.filter(
            cluster=ray_env, trigger=SyncRun.Trigger.DRIFT, state=SyncRun.State.SUCCEEDED
        ).first(),
        what="a drift-repair push",
    )
    assert run.config_snapshot["applications"][0]["name"] == "team-a--steady"
    wait_for(
        lambda: "team-a--steady" in ray_apps(ray_cluster) and "rogue" not in ray_apps(ray_cluster),
        what="drift repaired",
    )
    wait_for(lambda: app_state(app["id"]) == "running", what="app RUNNING again")


def ray_env_staff():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="platform")


def test_drift_is_only_flagged_under_the_flag_policy(ray_env, ray_cluster, api, alice, team_a, grant):
    from apps.deploys.reconcile import reconcile_cluster

    grant(team_a, ray_env, "4")
    PushState.objects.filter(pk=ray_env.pk).update(drift_policy=PushState.DriftPolicy.FLAG)
    app = api(alice).post("/api/v1/applications/", app_body("team-a", ray_env.pk, "flagged"), format="json").json()
    wait_for(lambda: app_state(app["id"]) == "running", what="app RUNNING")
    rogue = {"applications": [{"name": "rogue", "route_prefix": "/rogue", "import_path": "examples.hello:app"}]}
    requests.put(f"{ray_cluster.dashboard_url}/api/serve/applications/", json=rogue, timeout=10).raise_for_status()
    pushes = SyncRun.objects.filter(cluster=ray_env).count()
    assert reconcile_cluster(ray_env.pk) == "drift-flagged"
    drift = {(d["app"], d["kind"]) for d in Cluster.objects.get(pk=ray_env.pk).drift}
    assert drift == {("team-a--flagged", "missing"), ("rogue", "unexpected")}
    assert SyncRun.objects.filter(cluster=ray_env).count() == pushes
    page = api(alice).get(f"/api/v1/clusters/{ray_env.pk}/").json()
    assert {d["kind"] for d in page["drift"]} == {"missing"}  # a team reads its own apps' drift
    staff_view = api(ray_env_staff()).get(f"/api/v1/clusters/{ray_env.pk}/").json()
    assert {d["kind"] for d in staff_view["drift"]} == {"missing", "unexpected"}  # the rogue app: staff's
