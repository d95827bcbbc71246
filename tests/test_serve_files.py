"""Serve config files in and out, proven on a corpus of configs written by others (tests/data/real_serve_configs).

The reference is Ray 2.60's own ``ServeDeploySchema`` (what ``serve deploy`` validates with), with one change:
the code a config names (custom autoscaling policies, request routers) is checked as an import path instead of
imported, because it lives on the cluster, not here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from apps.applications.models import Application, Revision
from apps.applications.serve_files import check_document
from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.servespec.ray_schema import canonical_app, schemas

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).parent / "data" / "real_serve_configs"
FILES = sorted(p for p in CORPUS.glob("*.yaml"))


# Files Ray 2.60 accepts while silently dropping a key. The control plane refuses them naming the key (it would
# otherwise deploy something else than the file says); renamed keys are translated instead (below).
DROPS = {
    # request_router_config is kept as a dict by Ray's schema and turned into a RequestRouterConfig on the
    # cluster, which has no such field in 2.60 (a later Ray's test config).
    "ray__ingress_router_fallback.yaml": (
        "applications[0].deployments[0].request_router_config.ingress_router_fallback"
    ),
}
RENAMES = {"ray__use_custom_autoscaling.yaml": "policy.name: renamed to 'policy_function'"}
# Files Ray accepts that a shared cluster must not: Ray's scale endpoint would set any replica count, around the
# quota (docs/security.md).
SHARED_CLUSTER_REFUSES = {"ray__doc_external_scaler_config.yaml": "applications[0].external_scaler_enabled"}


def ray_verdict(document: dict) -> str | None:
    """None when Ray's ServeDeploySchema accepts the file, else its message."""
    try:
        schemas().deploy.model_validate(copy.deepcopy(document))  # Ray's validators change what they are given
    except Exception as exc:
        return str(exc)
    return None


def test_the_corpus_is_real_and_sourced():
    sources = {
        line.split("\t")[0]: line.split("\t")
        for line in (CORPUS / "SOURCES").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert len(FILES) >= 30
    for path in FILES:
        row = sources[path.name]  # every file says where it came from
        assert row[1] in ("ray-project/ray", "ray-project/kuberay") and row[4] == "Apache-2.0"
    assert (CORPUS / "LICENSE-Apache-2.0.txt").exists()


@pytest.fixture
def world(team_a, cluster, staff, alice, api):
    from apps.applications.models import RouteGrant
    from apps.quotas.services import quota_set

    quota_set(actor=staff, team=team_a, cluster=cluster, pool_name="a100", gpus="1000")
    # these files were written for a whole cluster, "/" included: staff gave the team the cluster's routes
    RouteGrant.objects.create(team=team_a, prefix="/")
    from apps.servespec.runtime_env import KNOWN_KEYS

    # and a runtime_env policy that trusts it with every runtime_env key and its package sources (a TPU sample
    # installs with "-f <url>")
    cluster.runtime_env_policy = {"allowed_keys": sorted(KNOWN_KEYS), "allow_pip_sources": True}
    cluster.save(update_fields=["runtime_env_policy"])
    for pool in ("H100", "B200", "L4"):  # the accelerators the LLM samples ask for by name
        cluster.pools.create(name=pool, resource="GPU", capacity=64)
        quota_set(actor=staff, team=team_a, cluster=cluster, pool_name=pool, gpus="1000")
    return {"client": api(alice), "cluster": cluster, "url": f"/api/v1/teams/team-a/serve-config/?cluster={cluster.pk}"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_real_config_is_judged_as_ray_judges_it_and_round_trips(world, path):
    text = path.read_text()
    document = yaml.safe_load(text)
    refused_by_ray = ray_verdict(document)
    client, url = world["client"], world["url"]
    dry = client.post(url + "&dry_run=true", text, content_type="application/yaml")
    if path.name in DROPS:
        from ray.serve.config import RequestRouterConfig

        assert refused_by_ray is None and "ingress_router_fallback" not in RequestRouterConfig.model_fields
        assert dry.status_code == 400 and DROPS[path.name] in dry.json(), dry.content
        return
    if path.name in SHARED_CLUSTER_REFUSES:
        assert refused_by_ray is None
        assert dry.status_code == 400 and SHARED_CLUSTER_REFUSES[path.name] in dry.json(), dry.content
        return
    if path.name in RENAMES:
        assert any(RENAMES[path.name] in w for w in dry.json()["warnings"]), dry.content
    if refused_by_ray:
        assert dry.status_code == 400, (path.name, dry.content)
        fields = set(dry.json())
        assert fields - {"non_field_errors", "file"}, f"{path.name}: the refusal names no field: {dry.json()}"
        assert not Application.objects.exists()
        return
    assert dry.status_code == 200, (path.name, dry.content)
    plan = dry.json()
    assert plan["dry_run"] is True and {p["action"] for p in plan["plan"]} == {"create"}
    assert not Application.objects.exists(), "a dry run saved something"

    applied = client.post(url, text, content_type="application/yaml")
    assert applied.status_code == 200, applied.content
    assert applied.json()["changed"] == len(document["applications"])
    exported = client.get(url).json()
    translated, _ = check_document(document)
    shared_logging = translated.get("logging_config")
    want = {}
    for app in translated["applications"]:
        spec = dict(app)
        if shared_logging is not None and spec.get("logging_config") is None:
            spec["logging_config"] = shared_logging
        want[app.get("name", "default")] = canonical_app(spec)
    got = {app["name"]: canonical_app(app) for app in exported["applications"]}
    assert got == want, path.name
    # The export is a file serve deploy accepts on a bare cluster.
    assert ray_verdict(exported) is None

    revisions, events = Revision.objects.count(), AuditEvent.objects.count()
    generation = Cluster.objects.get(pk=world["cluster"].pk).desired_generation
    again = client.post(url, text, content_type="application/yaml")
    assert again.status_code == 200 and again.json()["changed"] == 0
    assert {p["action"] for p in again.json()["plan"]} == {"unchanged"}
    assert Revision.objects.count() == revisions and AuditEvent.objects.count() == events
    assert Cluster.objects.get(pk=world["cluster"].pk).desired_generation == generation, "a no-op apply pushed"


def test_corpus_counts():
    """How many of the corpus Ray accepts and refuses (reported in the closing note)."""
    verdicts = [ray_verdict(yaml.safe_load(p.read_text())) is None for p in FILES]
    assert sum(verdicts) >= 30 and len(verdicts) - sum(verdicts) >= 5


JSON_FILE = {
    "http_options": {"host": "0.0.0.0", "port": 8000},
    "applications": [
        {
            "name": "fruit_app",
            "route_prefix": "/fruit",
            "import_path": "fruit.deployment_graph",
            "deployments": [
                {"name": "MangoStand", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1}}
            ],
        },
        {
            "name": "math_app",
            "route_prefix": "/calc",
            "import_path": "conditional_dag.serve_dag",
            "deployments": [{"name": "Adder", "max_concurrent_queries": 5, "user_config": {"increment": 3}}],
        },
    ],
}


def test_json_body_plan_warnings_update_diff_and_prune(world):
    client, url = world["client"], world["url"]
    resp = client.post(url, JSON_FILE, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert any("http_options: ignored" in w for w in body["warnings"])
    assert any("max_concurrent_queries" in w and "max_ongoing_requests" in w for w in body["warnings"])
    adder = Application.objects.get(name="math_app").current_revision.spec["deployments"][0]
    assert adder["max_ongoing_requests"] == 5 and "max_concurrent_queries" not in adder

    changed = {
        "applications": [
            {**JSON_FILE["applications"][0], "deployments": [{"name": "MangoStand", "num_replicas": 3}]},
        ]
    }
    plan = client.post(url + "&dry_run=true&prune=true", changed, format="json").json()["plan"]
    actions = {p["app"]: p for p in plan}
    assert actions["math_app"]["action"] == "delete"
    assert actions["fruit_app"]["action"] == "update"
    fields = {d["field"]: d for d in actions["fruit_app"]["diff"]}
    assert fields["deployments[MangoStand].num_replicas"]["desired"] == 3
    assert fields["deployments[MangoStand].num_replicas"]["observed"] == 2
    assert Application.objects.filter(name="math_app", deleted_at__isnull=True).exists(), "dry run deleted"


def test_integer_and_float_numbers_mean_the_same_so_no_new_revision(world):
    client, url = world["client"], world["url"]
    assert client.post(url, JSON_FILE, format="json").status_code == 200
    floats = yaml.safe_load(yaml.safe_dump(JSON_FILE))
    floats["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] = 1.0
    floats["applications"][0]["deployments"][0]["num_replicas"] = 2
    revisions = Revision.objects.count()
    resp = client.post(url, floats, format="json")
    assert resp.json()["changed"] == 0 and Revision.objects.count() == revisions


def test_one_refused_app_refuses_the_whole_file_and_changes_nothing(world, team_b, grant):
    client, url = world["client"], world["url"]
    big = {
        "applications": [
            {"name": "small", "route_prefix": "/s", "import_path": "a.b:c"},
            {
                "name": "huge",
                "route_prefix": "/h",
                "import_path": "a.b:c",
                "deployments": [{"name": "D", "num_replicas": "auto", "ray_actor_options": {"num_gpus": 11}}],
            },
        ]
    }
    resp = client.post(url, big, format="json")
    assert resp.status_code == 400
    errors = resp.json()
    assert "applications[1].quota" in errors and "1100" in errors["applications[1].quota"][0]
    assert not Application.objects.exists()


def test_files_ray_refuses_are_refused_naming_the_field(world):
    client, url = world["client"], world["url"]
    cases = [
        ({"applications": [{"name": "a", "import_path": "a.b:c", "bogus": 1}]}, "applications[0].bogus"),
        (
            {"applications": [{"name": "a", "import_path": "a.b:c", "deployments": [{"name": "D", "nm_replicas": 2}]}]},
            "applications[0].deployments[0].nm_replicas",
        ),
        (
            {
                "applications": [
                    {
                        "name": "a",
                        "import_path": "a.b:c",
                        "deployments": [{"name": "D", "autoscaling_config": {"min_replicas": 4, "max_replicas": 2}}],
                    }
                ]
            },
            "applications[0].deployments[0].autoscaling_config",
        ),
        ({"import_path": "a.b:c"}, "applications"),
        ({"applications": [{"name": "a", "import_path": "nocolon"}]}, "applications[0].import_path"),
    ]
    for document, field in cases:
        resp = client.post(url + "&dry_run=true", document, format="json")
        assert resp.status_code == 400 and field in resp.json(), (field, resp.json())


def test_code_named_by_a_config_is_never_imported(world, monkeypatch):
    import importlib

    imported: list[str] = []
    real = importlib.import_module

    def spy(name, *args, **kwargs):
        imported.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", spy)
    document = {
        "applications": [
            {
                "name": "custom",
                "import_path": "team_code.app:app",
                "deployments": [
                    {
                        "name": "D",
                        "autoscaling_config": {
                            "max_replicas": 2,
                            "policy": {"policy_function": "team_code.policies:scale_on_queue"},
                        },
                        "request_router_config": {"request_router_class": "team_code.routers:Sticky"},
                    }
                ],
            }
        ]
    }
    resp = world["client"].post(world["url"] + "&dry_run=true", document, format="json")
    assert resp.status_code == 200, resp.content
    assert not [m for m in imported if m.startswith("team_code")]


def test_yaml_export_and_hostile_yaml(world):
    client, url = world["client"], world["url"]
    client.post(url, JSON_FILE, format="json")
    resp = client.get(url + "&format=yaml")
    assert resp["Content-Type"].startswith("application/yaml")
    assert {a["name"] for a in yaml.safe_load(resp.content)["applications"]} == {"fruit_app", "math_app"}
    bomb = "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\napplications: []\n"
    bad = client.post(url, bomb, content_type="application/yaml")
    assert bad.status_code == 400 and "anchors" in bad.json()["file"][0]
    broken = client.post(url, "applications: [", content_type="application/yaml")
    assert broken.status_code == 400 and "line" in broken.json()["file"][0]


def test_viewers_read_members_write_outsiders_see_nothing(world, api, make_user, team_a, charlie):
    from apps.teams.models import Membership

    viewer = make_user("vera")
    Membership.objects.create(team=team_a, user=viewer, role="viewer")
    url = world["url"]
    assert api(viewer).get(url).status_code == 200
    assert api(viewer).post(url, JSON_FILE, format="json").status_code == 403
    assert api(charlie).get(url).status_code == 404
    assert world["client"].get("/api/v1/teams/team-a/serve-config/").status_code == 400


def test_yaml_values_json_cannot_carry_are_refused(world):
    text = "applications:\n  - name: a\n    import_path: a.b:c\n    args: {when: 2026-11-22, x: .nan}\n"
    resp = world["client"].post(world["url"], text, content_type="application/yaml")
    assert resp.status_code == 400 and "quote them" in resp.json()["file"][0]
