"""KubeRay clusters: manifest rendering and CRD validation for real; the client against a fake API server."""

from __future__ import annotations

import json

import pytest
import yaml

from apps.applications.services import application_create
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.kuberay import (
    ManifestInvalid,
    apply_serve_config,
    client_for,
    render_rayservice,
    serve_status_from_rayservice,
    validate_manifest,
)
from apps.deploys.observe import observe_cluster
from apps.deploys.push import push_cluster
from tests.fake_k8s import FakeKube

pytestmark = pytest.mark.django_db

CONFIG = {
    "applications": [
        {
            "name": "team-a--web",
            "route_prefix": "/web",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello", "num_replicas": 2}],
        }
    ]
}


@pytest.fixture
def kube():
    server = FakeKube().start()
    yield server
    server.stop()


@pytest.fixture
def kcluster(make_cluster, kube):
    return make_cluster(
        name="k8s-prod", kind="kuberay", k8s_namespace="ml", k8s_name="serve", kubeconfig=kube.kubeconfig()
    )


def test_rendered_manifest_validates_against_the_crd():
    manifest = render_rayservice(name="serve", namespace="ml", serve_config=CONFIG, ray_cluster=None)
    assert manifest["kind"] == "RayService" and yaml.safe_load(manifest["spec"]["serveConfigV2"]) == CONFIG
    broken = {**manifest, "spec": {**manifest["spec"], "rayClusterConfig": {"headGroupSpec": {"rayStartParams": "x"}}}}
    with pytest.raises(ManifestInvalid, match="rayStartParams"):
        validate_manifest(broken)
    with pytest.raises(ManifestInvalid, match="serveConfigV2"):
        validate_manifest({**manifest, "spec": {**manifest["spec"], "serveConfigV2": {"not": "a string"}}})


def test_kuberay_cluster_needs_namespace_and_name(staff, api):
    resp = api(staff).post(
        "/api/v1/clusters/", {"name": "k", "kind": "kuberay", "dashboard_url": "http://127.0.0.1:1"}, format="json"
    )
    assert resp.status_code == 400 and {"k8s_namespace", "k8s_name"} <= set(resp.json())


def test_create_then_patch_only_serve_config(kcluster, kube):
    client = client_for(kcluster)
    assert apply_serve_config(client, kcluster, CONFIG) == "created"
    obj = kube.objects[("ml", "serve")]
    group = {
        "groupName": "gpu",
        "minReplicas": 0,
        "maxReplicas": 4,
        "template": {"spec": {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.60.0"}]}},
    }
    obj["spec"]["rayClusterConfig"]["workerGroupSpecs"] = [group]  # the cluster owner's edit
    kube.bump("ml", "serve")
    config2 = {"applications": [dict(CONFIG["applications"][0], route_prefix="/web2")]}
    assert apply_serve_config(client, kcluster, config2) == "patched"
    after = kube.objects[("ml", "serve")]
    assert yaml.safe_load(after["spec"]["serveConfigV2"]) == config2
    assert after["spec"]["rayClusterConfig"]["workerGroupSpecs"] == [group]


def test_conflicting_writer_is_retried_with_the_fresh_resource_version(kcluster, kube):
    client = client_for(kcluster)
    apply_serve_config(client, kcluster, CONFIG)
    bumps = []

    def race(k: FakeKube, ns: str, name: str) -> None:
        if len(bumps) < 2:  # someone else writes between our read and our patch, twice
            bumps.append(1)
            k.bump(ns, name, lambda o: o["metadata"].setdefault("annotations", {}).update({"other": str(len(bumps))}))

    kube.before_patch = race
    assert apply_serve_config(client, kcluster, {"applications": []}) == "patched"
    codes = [code for method, _, code in kube.log if method == "PATCH"]
    assert codes == [409, 409, 200]
    assert kube.objects[("ml", "serve")]["metadata"]["annotations"] == {"other": "2"}


def test_push_and_status_through_the_sync_service(kcluster, kube, alice, team_a, grant):
    grant(team_a, kcluster, "4")
    application_create(
        actor=alice,
        team=team_a,
        cluster=kcluster,
        name="web",
        spec={"route_prefix": "/team-a/web", "import_path": "examples.hello:app", "deployments": [{"name": "Hello"}]},
    )
    result = push_cluster(kcluster.pk)
    assert result.outcome == "pushed"
    run = SyncRun.objects.get(pk=result.runs[0])
    assert run.state == "succeeded"
    obj = kube.objects[("ml", "serve")]
    assert [a["name"] for a in yaml.safe_load(obj["spec"]["serveConfigV2"])["applications"]] == ["team-a--web"]

    def status(o: dict) -> None:
        o["status"] = {
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "False"}],
            "activeServiceStatus": {
                "applicationStatuses": {
                    "team-a--web": {"status": "RUNNING", "serveDeploymentStatuses": {"Hello": {"status": "HEALTHY"}}}
                }
            },
        }

    kube.bump("ml", "serve", status)
    observe_cluster(kcluster.pk)  # status from the CR; this cluster's dashboard URL does not answer (nodes unknown)
    from apps.applications.models import Application

    app = Application.objects.get(name="web")
    assert app.state == "running" and app.status["deployments"]["Hello"]["status"] == "HEALTHY"
    assert Cluster.objects.get(pk=kcluster.pk).drift == []


def test_upgrade_in_progress_reports_the_pending_status():
    obj = {
        "spec": {"serveConfigV2": yaml.safe_dump(CONFIG)},
        "status": {
            "conditions": [{"type": "UpgradeInProgress", "status": "True"}],
            "activeServiceStatus": {"applicationStatuses": {"team-a--web": {"status": "RUNNING"}}},
            "pendingServiceStatus": {
                "applicationStatuses": {"team-a--web": {"status": "DEPLOYING", "message": "new cluster"}}
            },
        },
    }
    status = serve_status_from_rayservice(obj)
    assert status["upgrade_in_progress"] and status["applications"]["team-a--web"]["status"] == "DEPLOYING"
    assert status["applications"]["team-a--web"]["deployed_app_config"]["route_prefix"] == "/web"


def test_unreachable_api_server_is_a_transient_sync_failure(make_cluster, alice, team_a, grant):
    from workers.clients.ray_dashboard import RayUnavailable

    # A real API server that answered once and is gone: its port now refuses connections.
    gone = FakeKube().start()
    kubeconfig = gone.kubeconfig()
    assert (
        client_for(
            make_cluster(name="k8s-alive", kind="kuberay", k8s_namespace="ml", k8s_name="s", kubeconfig=kubeconfig)
        ).get()
        is None
    )  # it did answer
    gone.stop()
    dead = make_cluster(name="k8s-dead", kind="kuberay", k8s_namespace="ml", k8s_name="serve", kubeconfig=kubeconfig)
    grant(team_a, dead, "1")
    application_create(
        actor=alice,
        team=team_a,
        cluster=dead,
        name="web",
        spec={"route_prefix": "/team-a/w", "import_path": "examples.hello:app", "deployments": [{"name": "Hello"}]},
    )
    with pytest.raises(RayUnavailable):
        push_cluster(dead.pk)
    run = SyncRun.objects.filter(cluster=dead).first()
    assert run.state == "failed" and "Kubernetes API unreachable" in run.error


def test_an_api_server_that_never_answers_fails_the_push_within_the_timeout(
    make_cluster, alice, team_a, grant, settings
):
    import socket
    import time

    from workers.clients.ray_dashboard import RayUnavailable

    settings.RAY_HTTP_TIMEOUT_S = 1
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel's backlog) and never reads or answers
    port = silent.getsockname()[1]
    config = json.loads(FakeKube().kubeconfig())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    kubeconfig = json.dumps(config)
    try:
        hung = make_cluster(name="k8s-hung", kind="kuberay", k8s_namespace="ml", k8s_name="s", kubeconfig=kubeconfig)
        grant(team_a, hung, "1")
        application_create(
            actor=alice,
            team=team_a,
            cluster=hung,
            name="web",
            spec={"route_prefix": "/team-a/w", "import_path": "examples.hello:app"},
        )
        started = time.monotonic()
        with pytest.raises(RayUnavailable):
            push_cluster(hung.pk)
        assert time.monotonic() - started < 20
    finally:
        silent.close()
    assert "Kubernetes API unreachable" in SyncRun.objects.filter(cluster=hung).first().error


def test_a_rollout_reaches_kuberay_through_serve_config_v2_and_steps_on_its_status(
    kcluster, kube, alice, team_a, grant
):
    """KubeRay takes the same mechanism: the three applications of a rollout go in the RayService's serveConfigV2
    (validated against the CRD), and the engine reads their status from the RayService's status."""
    from apps.applications.models import Application
    from apps.rollouts.models import Rollout
    from apps.rollouts.services import rollout_start
    from workers.tasks.rollouts import tick_cluster

    grant(team_a, kcluster, "4")
    spec = {
        "route_prefix": "/team-a/web",
        "import_path": "examples.hello:build",
        "args": {"greeting": "v1"},
        "deployments": [{"name": "Hello", "num_replicas": 1}],
    }
    app = application_create(actor=alice, team=team_a, cluster=kcluster, name="web", spec=spec)
    push_cluster(kcluster.pk)
    Application.objects.filter(pk=app.pk).update(deployed_revision=app.current_revision, state="running")
    app.refresh_from_db()
    r = rollout_start(actor=alice, application=app, spec={**spec, "args": {"greeting": "v2"}}, steps=[50, 100])
    assert push_cluster(kcluster.pk).outcome == "pushed"
    obj = kube.objects[("ml", "serve")]
    validate_manifest(obj)
    placed = {a["name"]: a for a in yaml.safe_load(obj["spec"]["serveConfigV2"])["applications"]}
    assert {n: a["route_prefix"] for n, a in placed.items()} == {
        "team-a--web": "/team-a/web",
        "team-a--web@canary": "/__rollout/team-a--web/canary",
        "team-a--web@split": "/__rollout/team-a--web/split",
    }
    assert placed["team-a--web@split"]["import_path"] == "workers.on_cluster.splitter:build"

    def running(o: dict) -> None:
        o["status"] = {
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "UpgradeInProgress", "status": "False"}],
            "activeServiceStatus": {
                "applicationStatuses": {name: {"status": "RUNNING", "serveDeploymentStatuses": {}} for name in placed}
            },
        }

    kube.bump("ml", "serve", running)
    assert tick_cluster(kcluster.pk) == "changed"
    r.refresh_from_db()
    assert (r.phase, r.weight) == ("split", 50.0)
    push_cluster(kcluster.pk)
    placed = {
        a["name"]: a for a in yaml.safe_load(kube.objects[("ml", "serve")]["spec"]["serveConfigV2"])["applications"]
    }
    assert placed["team-a--web@split"]["route_prefix"] == "/team-a/web"
    assert placed["team-a--web"]["route_prefix"] == "/__rollout/team-a--web/stable"
    assert placed["team-a--web@split"]["deployments"][0]["user_config"] == {"weight": 50.0}
    assert Rollout.objects.get().verdicts[0]["weight"] == 50.0
