"""Ray's Serve REST API per team and cluster (apps.deploys.ray_api), with Ray faked at the clients seam: who may
call it and what Ray's own words answer, a PUT that is the team's file applied with prune, a GET of the team's apps
only under its names, a DELETE of the team's apps only. The real Ray CLI against a real Ray is in
tests/e2e/test_ray_cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from apps.applications.models import Application
from apps.audit.models import AuditEvent
from apps.teams.models import Role
from apps.teams.services import issue_token
from workers.clients.ray_dashboard import RayDashboardClient, RayUnavailable

pytestmark = pytest.mark.django_db

FRUIT = {  # the shape of Ray's docs' multi-app example: routes at "/" and "/calc", no team in sight
    "applications": [
        {"name": "fruit", "route_prefix": "/", "import_path": "examples.hello:app"},
        {
            "name": "calc",
            "route_prefix": "/calc",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
        },
    ]
}


def ray_client(user, **token) -> Client:
    secret = issue_token(user=user, name="ray", **token)[1]
    return Client(HTTP_AUTHORIZATION=f"Bearer {secret}")


def base(team: str, cluster) -> str:
    return f"/ray/{team}/{cluster.name}/api/serve/applications/"


def put(client: Client, team: str, cluster, config: dict):
    return client.put(base(team, cluster), json.dumps(config), content_type="application/json")


@pytest.fixture
def ray_reports(monkeypatch):
    """What Ray's dashboard answers to GET /api/serve/applications/ (every team's apps, as Ray has them)."""
    doc: dict = {"controller_info": {"node_id": "head"}, "proxies": {}, "applications": {}}

    def get(self):
        if isinstance(doc.get("error"), Exception):
            raise doc["error"]
        return doc

    monkeypatch.setattr(RayDashboardClient, "get_serve_applications", get)
    return doc


def test_tokens_are_taken_as_ray_sends_them_and_refused_in_ray_s_words(alice, bob, team_a, team_b, cluster):
    url = f"/ray/team-a/{cluster.name}/api/ray/version"
    assert Client().get(url).status_code == 401
    assert Client().get(url).content == b"Unauthorized: Missing authentication token"
    wrong = Client(HTTP_AUTHORIZATION="Bearer not-a-token").get(url)
    assert wrong.status_code == 403 and wrong.content == b"Forbidden: Invalid authentication token"
    ok = ray_client(alice).get(url)
    assert ok.status_code == 200 and ok.json()["ray_version"] == "2.60.0"
    secret = issue_token(user=alice, name="x")[1]
    via_proxy = Client(HTTP_X_RAY_AUTHORIZATION=f"Bearer {secret}").get(url)  # what KubeRay's proxies forward
    assert via_proxy.status_code == 200
    # Another team's URL, and a cluster that does not exist, are not found: nothing says the team exists.
    assert ray_client(bob).get(url).status_code == 404
    assert ray_client(alice).get("/ray/team-a/nope/api/ray/version").status_code == 404


def test_a_put_is_the_team_s_file_applied_with_prune(alice, bob, team_a, team_b, cluster, grant, ray_reports):
    grant(team_a, cluster, "2")
    grant(team_b, cluster, "2")
    b_app = {"applications": [{"name": "fruit", "route_prefix": "/team-b/fruit", "import_path": "examples.hello:app"}]}
    assert put(ray_client(bob), "team-b", cluster, b_app).status_code == 200
    alice_ray = ray_client(alice)
    resp = put(alice_ray, "team-a", cluster, FRUIT)
    assert resp.status_code == 200, resp.content
    mine = {a.name: a.route_prefix for a in Application.objects.filter(team=team_a, deleted_at__isnull=True)}
    assert mine == {"fruit": "/team-a", "calc": "/team-a/calc"}  # Ray's docs' routes, in the team's namespace
    assert AuditEvent.objects.filter(action="application.create", source="ray-api", team=team_a).count() == 2
    # The same name in two teams is two apps; neither touches the other.
    assert Application.objects.get(team=team_b, name="fruit").deleted_at is None

    # A PUT without calc deletes calc (Ray's semantics, in the team's view), and nothing of team B's.
    assert put(alice_ray, "team-a", cluster, {"applications": FRUIT["applications"][:1]}).status_code == 200
    assert set(Application.objects.filter(team=team_a, deleted_at__isnull=True).values_list("name", flat=True)) == {
        "fruit"
    }
    assert Application.objects.get(team=team_b, name="fruit").deleted_at is None


def test_a_refused_config_is_a_400_ray_s_cli_prints_and_changes_nothing(alice, team_a, cluster, grant, ray_reports):
    grant(team_a, cluster, "0.5")
    alice_ray = ray_client(alice)
    assert put(alice_ray, "team-a", cluster, {"applications": FRUIT["applications"][1:]}).status_code == 200
    greedy = json.loads(json.dumps(FRUIT))
    greedy["applications"][0]["deployments"] = [
        {"name": "Hello", "num_replicas": 3, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1}}
    ]
    resp = put(alice_ray, "team-a", cluster, greedy)
    assert resp.status_code == 400 and resp["Content-Type"].startswith("text/plain")
    body = resp.content.decode()
    assert body.startswith("The config was refused; nothing was changed:")
    assert "applications[0]" in body and "GPU" in body, body
    assert set(Application.objects.filter(team=team_a, deleted_at__isnull=True).values_list("name", flat=True)) == {
        "calc"
    }
    bad = put(alice_ray, "team-a", cluster, {"applications": [{"name": "x", "import_path": "a:b", "nope": 1}]})
    assert bad.status_code == 400 and "nope" in bad.content.decode()


def test_a_viewer_token_reads_and_may_not_write(alice, team_a, cluster, grant, ray_reports):
    viewer = ray_client(alice, team=team_a, role=Role.VIEWER)
    assert viewer.get(base("team-a", cluster)).status_code == 200
    refused = put(viewer, "team-a", cluster, FRUIT)
    assert refused.status_code == 403 and b"member role" in refused.content
    assert viewer.delete(base("team-a", cluster)).status_code == 403
    assert not Application.objects.exists()


def test_get_shows_the_team_s_apps_only_under_its_names(alice, bob, team_a, team_b, cluster, grant, ray_reports):
    from ray.serve.schema import ServeInstanceDetails

    grant(team_a, cluster, "2")
    grant(team_b, cluster, "2")
    assert put(ray_client(alice), "team-a", cluster, FRUIT).status_code == 200
    b_app = {"applications": [{"name": "secret-app", "route_prefix": "/team-b/s", "import_path": "examples.hello:app"}]}
    assert put(ray_client(bob), "team-b", cluster, b_app).status_code == 200
    fruit = Application.objects.get(team=team_a, name="fruit")
    Application.objects.filter(pk=fruit.pk).update(deployed_revision=fruit.current_revision)
    other = Application.objects.get(team=team_b)
    ray_reports["applications"] = {
        fruit.serve_name: {
            "name": fruit.serve_name,
            "route_prefix": "/team-a",
            "docs_path": None,
            "status": "RUNNING",
            "message": "",
            "last_deployed_time_s": 1.0,
            "deployed_app_config": {"name": fruit.serve_name, "import_path": "examples.hello:app"},
            "source": "declarative",
            "deployments": {},
            "external_scaler_enabled": False,
        },
        other.serve_name: {"name": other.serve_name, "status": "RUNNING", "message": "B_SECRET_VALUE"},
    }
    resp = ray_client(alice).get(base("team-a", cluster))
    assert resp.status_code == 200
    seen = resp.json()
    assert set(seen["applications"]) == {"fruit", "calc"}
    assert seen["applications"]["fruit"]["status"] == "RUNNING"
    assert seen["applications"]["fruit"]["deployed_app_config"]["name"] == "fruit"
    assert seen["applications"]["calc"]["status"] == "DEPLOYING"  # stored, not in Ray yet
    assert "team-b" not in resp.content.decode() and "B_SECRET_VALUE" not in resp.content.decode()
    details = ServeInstanceDetails(**seen)  # what `serve status` and `serve config` parse it with
    assert details.applications["fruit"].deployed_app_config.name == "fruit"

    ray_reports["error"] = RayUnavailable("connection refused")
    down = ray_client(alice).get(base("team-a", cluster))
    assert down.status_code == 503 and b"not answering" in down.content


def test_delete_removes_the_team_s_apps_only(alice, bob, team_a, team_b, cluster, grant, ray_reports):
    grant(team_a, cluster, "2")
    grant(team_b, cluster, "2")
    assert put(ray_client(alice), "team-a", cluster, FRUIT).status_code == 200
    b_app = {"applications": [{"name": "b", "route_prefix": "/team-b/b", "import_path": "examples.hello:app"}]}
    assert put(ray_client(bob), "team-b", cluster, b_app).status_code == 200
    assert ray_client(alice).delete(base("team-a", cluster)).status_code == 200
    alive = Application.objects.filter(deleted_at__isnull=True)
    assert list(alive.values_list("team__slug", "name")) == [("team-b", "b")]


def test_the_team_page_shows_the_two_lines_filled_in(alice, team_a, cluster, grant, settings):
    settings.PUBLIC_URL = "https://cp.example"
    grant(team_a, cluster, "1")
    page = Client()
    page.force_login(alice)
    html = page.get("/teams/team-a/").content.decode()
    assert "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=&lt;your token&gt;" in html
    assert f"serve deploy serve.yaml --address https://cp.example/ray/team-a/{cluster.name}" in html


def test_a_name_with_a_double_hyphen_as_ray_llm_writes_it(alice, team_a, cluster, grant, ray_reports):
    grant(team_a, cluster, "1")
    llm = {"applications": [{"name": "amazon--LightGPT", "route_prefix": "/", "import_path": "examples.hello:app"}]}
    assert put(ray_client(alice), "team-a", cluster, llm).status_code == 200
    app = Application.objects.get(team=team_a)
    assert app.name == "amazon--LightGPT" and app.serve_name == "team-a--amazon--LightGPT"
    ray_reports["applications"] = {
        app.serve_name: {"name": app.serve_name, "status": "RUNNING", "deployed_app_config": {"name": app.serve_name}}
    }
    seen = ray_client(alice).get(base("team-a", cluster)).json()["applications"]
    assert list(seen) == ["amazon--LightGPT"] and seen["amazon--LightGPT"]["deployed_app_config"]["name"] == (
        "amazon--LightGPT"
    )


@pytest.fixture
def scaled(monkeypatch):
    """Ray's scale endpoint at the clients seam: the calls it received."""
    calls: list[tuple[str, str, int]] = []
    monkeypatch.setattr(
        RayDashboardClient, "scale_deployment", lambda self, app, dep, target: calls.append((app, dep, target))
    )
    return calls


def scale(client: Client, cluster, app: str, dep: str, target: int):
    url = f"/ray/team-a/{cluster.name}/api/v1/applications/{app}/deployments/{dep}/scale"
    return client.post(url, {"target_num_replicas": target}, content_type="application/json")


def test_the_external_scaler_is_admitted_versioned_audited_then_passed_to_ray(
    alice, team_a, make_cluster, grant, scaled
):
    cluster = make_cluster(name="token-1", auth_token="ray-token")
    grant(team_a, cluster, "2")
    config = {
        "applications": [
            {
                "name": "ranker",
                "route_prefix": "/team-a/ranker",
                "import_path": "examples.hello:app",
                "external_scaler_enabled": True,
                "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_gpus": 0.5}}],
            },
            {"name": "plain", "route_prefix": "/team-a/plain", "import_path": "examples.hello:app"},
        ]
    }
    alice_ray = ray_client(alice)
    assert put(alice_ray, "team-a", cluster, config).status_code == 200
    app = Application.objects.get(name="ranker")

    ok = scale(alice_ray, cluster, "ranker", "Hello", 4)
    assert ok.status_code == 200 and "Scaling request received" in ok.json()["message"]
    assert scaled == [(app.serve_name, "Hello", 4)]
    app.refresh_from_db()
    assert app.current_revision.spec["deployments"][0]["num_replicas"] == 4 and app.current_revision.number == 2
    event = AuditEvent.objects.filter(action="application.update", source="ray-api").latest("id")
    assert "scaled" in app.current_revision.message and event.team_id == team_a.pk

    # 5 x 0.5 GPU > the 2 GPU quota: refused, nothing changed, Ray not asked.
    over = scale(alice_ray, cluster, "ranker", "Hello", 5)
    assert over.status_code == 400 and "GPU" in over.json()["error"], over.content
    assert len(scaled) == 1 and Application.objects.get(pk=app.pk).current_revision.number == 2

    plain = scale(alice_ray, cluster, "plain", "Hello", 2)
    assert plain.status_code == 412 and "external_scaler_enabled" in plain.json()["error"]
    missing = scale(alice_ray, cluster, "ranker", "Nope", 1)
    assert missing.status_code == 404
    bad = scale(alice_ray, cluster, "ranker", "Hello", -1)
    assert (
        bad.status_code == 400 and "target_num_replicas" in bad.json()["error"] or "whole number" in bad.json()["error"]
    )
    viewer = ray_client(alice, team=team_a, role=Role.VIEWER)
    assert scale(viewer, cluster, "ranker", "Hello", 1).status_code == 403
    assert len(scaled) == 1


def test_ray_s_whole_cluster_api_is_not_served_at_a_team_s_address(alice, team_a, cluster):
    assert Client().get(f"/ray/team-a/{cluster.name}/api/jobs/").status_code == 401  # the token first
    jobs = ray_client(alice).post(f"/ray/team-a/{cluster.name}/api/jobs/", {}, content_type="application/json")
    assert jobs.status_code == 404 and b"Not served here: /api/jobs/ is part of Ray's dashboard API" in jobs.content


def test_a_config_from_ray_s_docs_deploys_unchanged(alice, team_a, cluster, grant, ray_reports):
    """Ray's doc/source/serve/doc_code/config.yaml (kept in the corpus with its source), sent as `serve deploy`
    sends it: Ray's ServeDeploySchema of the file, dumped with exclude_unset."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    grant(team_a, cluster, "1")
    text = (Path(__file__).parent / "data" / "real_serve_configs" / "ray__doc_config.yaml").read_text()
    body = ServeDeploySchema(**yaml.safe_load(text)).model_dump(exclude_unset=True)
    resp = put(ray_client(alice), "team-a", cluster, body)
    assert resp.status_code == 200, resp.content
    routes = dict(Application.objects.filter(team=team_a).values_list("name", "route_prefix"))
    assert routes == {"app1": "/team-a/calculator", "app2": "/team-a/greet"}


def test_on_kuberay_the_answer_parses_as_ray_s_and_a_scale_waits_for_the_push(
    alice, team_a, make_cluster, grant, monkeypatch
):
    """KubeRay's RayService status has no routes, times or deployment configs: the team's view fills what Ray's
    ServeInstanceDetails requires (what `serve status` parses) and names the RayService as Serve's controller, so
    `serve shutdown` goes ahead. Ray's scale endpoint belongs to KubeRay there: the pushed config carries it."""
    import yaml
    from ray.serve.schema import ServeInstanceDetails

    from workers.clients.kuberay import KubeRayClient

    cluster = make_cluster(
        name="k8s-1", kind="kuberay", k8s_namespace="ml", k8s_name="serve", kubeconfig="{}", auth_token="t"
    )
    grant(team_a, cluster, "2")
    config = {
        "applications": [
            {
                "name": "ranker",
                "import_path": "examples.hello:app",
                "external_scaler_enabled": True,
                "deployments": [{"name": "Hello", "num_replicas": 1}],
            }
        ]
    }
    assert put(ray_client(alice), "team-a", cluster, config).status_code == 200
    app = Application.objects.get(team=team_a)
    rayservice = {
        "spec": {"serveConfigV2": yaml.safe_dump({"applications": [{"name": app.serve_name, "import_path": "x:y"}]})},
        "status": {
            "activeServiceStatus": {
                "applicationStatuses": {
                    app.serve_name: {
                        "status": "RUNNING",
                        "serveDeploymentStatuses": {"Hello": {"status": "HEALTHY"}},
                    },
                    "team-b--other": {"status": "RUNNING"},
                }
            }
        },
    }
    monkeypatch.setattr(KubeRayClient, "get", lambda self: rayservice)
    monkeypatch.setattr(
        KubeRayClient, "__init__", lambda self, **kw: None
    )  # no API server needed: get() answers the object
    seen = ray_client(alice).get(base("team-a", cluster)).json()
    details = ServeInstanceDetails(**seen)
    assert list(details.applications) == ["ranker"] and details.applications["ranker"].status == "DEPLOYING"
    assert details.controller_info.node_id == "rayservice:k8s-1"
    assert details.applications["ranker"].deployments["Hello"].status == "HEALTHY"

    url = f"/ray/team-a/{cluster.name}/api/v1/applications/ranker/deployments/Hello/scale"
    scaled = ray_client(alice).post(url, {"target_num_replicas": 2.0}, content_type="application/json")
    assert scaled.status_code == 200, scaled.content  # 2.0 is a whole number, as Ray's own endpoint takes it
    app.refresh_from_db()
    assert app.current_revision.spec["deployments"][0]["num_replicas"] == 2


CORPUS = sorted((Path(__file__).parent / "data" / "real_serve_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_configs_others_wrote_are_applied_or_refused_in_words(path, alice, team_a, cluster, grant, ray_reports):
    """Every config of the corpus (Ray's docs and tests, KubeRay's samples), sent as `serve deploy` would: applied,
    or refused with a 400 that Ray's CLI prints; never an error of the control plane's own."""
    import yaml

    grant(team_a, cluster, "64")
    document = yaml.safe_load(path.read_text())
    resp = put(ray_client(alice), "team-a", cluster, document)
    assert resp.status_code in (200, 400), (resp.status_code, resp.content[:500])
    if resp.status_code == 400:
        assert resp.content.startswith(b"The config was refused; nothing was changed:\n  "), resp.content[:300]
    else:
        routes = Application.objects.filter(team=team_a, deleted_at__isnull=True).values_list("route_prefix", flat=True)
        assert all(r == "" or r == "/team-a" or r.startswith("/team-a/") for r in routes), list(routes)
