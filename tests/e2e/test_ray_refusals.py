"""Ray refusing a push, for real: its 400 when its schema refuses a config, and the 500 it gives when a config
names code its dashboard cannot import. Neither is retried; what ran before keeps running and stays marked."""

from __future__ import annotations

import pytest
import requests

from apps.applications.models import Application
from apps.clusters.models import SyncRun
from apps.deploys.models import PushState
from apps.deploys.push import push_cluster
from apps.deploys.reconcile import reconcile_cluster
from tests.conftest import app_body, reset_serve, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]


def ray_apps(ray_cluster) -> dict:
    return requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=30).json()["applications"]


@pytest.fixture
def quiet_cluster(ray_cluster, make_cluster, team_a, grant):
    """The test cluster registered with no worker running: the test pushes when it chooses."""
    reset_serve(ray_cluster)
    cluster = make_cluster(
        name="refusals",
        dashboard_url=ray_cluster.dashboard_url,
        serve_url=ray_cluster.serve_url,
        http_port=ray_cluster.serve_port,
        gpus="12",
    )
    grant(team_a, cluster, "4")
    return cluster


def test_ray_refuses_a_push_with_a_4xx_and_it_is_not_retried(quiet_cluster, ray_cluster, api, alice, monkeypatch):
    """Ray 2.60 answers 400 when its schema refuses the config. The control plane validates with the same schema,
    so this happens when the two disagree: the cluster runs another Ray version (or a revision was stored by an
    older control plane). That is simulated here by switching the control plane's own check off."""
    client = api(alice)
    keep = client.post("/api/v1/applications/", app_body("team-a", quiet_cluster.pk, "keep"), format="json").json()
    assert push_cluster(quiet_cluster.pk).outcome == "pushed"
    wait_for(lambda: ray_apps(ray_cluster).get("team-a--keep", {}).get("status") == "RUNNING", what="keep RUNNING")
    running = Application.objects.get(pk=keep["id"]).deployed_revision_id
    bad = app_body("team-a", quiet_cluster.pk, "keep", deployments=[{"name": "Hello", "num_replicas": 2}])
    assert client.put(f"/api/v1/applications/{keep['id']}/", bad, format="json").status_code == 200
    app = Application.objects.get(pk=keep["id"])
    from apps.applications.models import Revision

    # What a cluster on another Ray version refuses: here, a replica count Ray 2.60's schema does not accept.
    Revision.objects.filter(pk=app.current_revision_id).update(
        spec={**app.current_revision.spec, "deployments": [{"name": "Hello", "num_replicas": -2}]}
    )
    monkeypatch.setattr("apps.servespec.spec.validate_deploy_config", lambda config: None)
    result = push_cluster(quiet_cluster.pk)
    run = SyncRun.objects.get(pk=result.runs[0])
    assert run.state == "failed"
    assert "Ray rejected the request (HTTP 400)" in run.error and "num_replicas" in run.error
    # Ray's answer names the app (applications.0...): that revision is held back, what ran keeps running
    assert list(run.faults) == ["team-a--keep"] and result.outcome in ("pushed", "skipped")
    assert Application.objects.get(pk=keep["id"]).state == "deploy_failed"
    runs = SyncRun.objects.filter(cluster=quiet_cluster).count()
    for _ in range(3):  # the reconcile does not push the same refused config again
        reconcile_cluster(quiet_cluster.pk)
    assert SyncRun.objects.filter(cluster=quiet_cluster).count() == runs
    assert PushState.objects.get(pk=quiet_cluster.pk).last_failed_hash == run.config_hash
    assert Application.objects.get(pk=keep["id"]).deployed_revision_id == running  # what runs stays marked
    assert ray_apps(ray_cluster)["team-a--keep"]["status"] == "RUNNING"  # and keeps running


def test_a_config_naming_code_the_dashboard_cannot_import_is_refused_not_retried(
    quiet_cluster, ray_cluster, api, alice
):
    body = app_body(
        "team-a",
        quiet_cluster.pk,
        "custom",
        deployments=[
            {
                "name": "Hello",
                "autoscaling_config": {
                    "max_replicas": 2,
                    "policy": {"policy_function": "team_policies.scale:by_queue"},
                },
                "ray_actor_options": {"num_cpus": 0.1},
            }
        ],
    )
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 201 and any(
        "importable where Ray's dashboard runs" in w for w in resp.json()["warnings"]
    )
    result = push_cluster(quiet_cluster.pk)  # Ray answers 500 with a ModuleNotFoundError
    runs = list(SyncRun.objects.filter(pk__in=result.runs).order_by("id"))
    run = runs[0]
    assert run.state == "failed" and "could not import" in run.error and "team_policies" in run.error
    assert list(run.faults) == ["team-a--custom"]  # the app at fault, found by the module Ray names
    # it is held back (it never ran: nothing of it is pushed) and the next push goes out without it
    assert runs[-1].state in ("succeeded", "skipped") and "team-a--custom" not in str(runs[-1].config_snapshot)
    app = Application.objects.get(pk=resp.json()["id"])
    assert app.state == "deploy_failed" and "team_policies" in app.fault
