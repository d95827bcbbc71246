"""Real-world fidelity against a real local Ray cluster and a real Celery worker.

- Deployment options taken from configs written by others (tests/data/real_serve_configs) deploy through the API,
  reach RUNNING in the control plane when Ray says RUNNING, show no drift, and cause no push afterwards.
- A multiplexed app's first burst (before any scrape saw the app) is counted exactly, with overlapping scrapes.
- A cluster that already runs two apps is registered: both keep answering through the first push and beyond;
  one is adopted into a team (its route answers throughout), the other removed; both steps are audited.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.models import PushState
from apps.deploys.reconcile import reconcile_cluster
from apps.localdev.management.commands.seed_models import write_models
from apps.metrics import services as metrics
from apps.metrics.models import Series
from tests.conftest import app_body, reset_serve, wait_for, wait_for_every_proxy
from tests.e2e.test_metrics_ray import ray_counter
from tests.support.lru import lru_loads

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

# Deployment options transplanted onto examples.hello's "Hello" deployment, each from a real config.
REAL_OPTIONS = [
    (
        "kuberay__config__samples__ray-service.sample.yaml: MangoStand",
        {
            "num_replicas": 2,
            "max_replicas_per_node": 1,
            "user_config": {"price": 3},
            "ray_actor_options": {"num_cpus": 0.1},
        },
    ),
    (
        "kuberay__config__samples__ray-service.incremental-upgrade.yaml: MangoStand (autoscaling, int limits)",
        {
            "user_config": {"price": 4},
            "ray_actor_options": {"num_cpus": 0.5},
            "max_ongoing_requests": 100,
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 3},
        },
    ),
    (
        "kuberay__config__samples__ray-service.incremental-upgrade.yaml: OrangeStand (integer zero CPUs)",
        {"num_replicas": 1, "user_config": {"price": 2}, "ray_actor_options": {"num_cpus": 0}},
    ),
    (
        "kuberay__test__e2erayservice__testdata__rayservice.autoscaling.yaml: NoOp",
        {
            "autoscaling_config": {
                "metrics_interval_s": 0.2,
                "min_replicas": 1,
                "max_replicas": 14,
                "look_back_period_s": 2,
                "downscale_delay_s": 5,
                "upscale_delay_s": 2,
                "target_ongoing_requests": 1,
            },
            "graceful_shutdown_timeout_s": 5,
            "ray_actor_options": {"num_cpus": 0.5},
        },
    ),
    (
        "kuberay__config__samples__ray-service.text-ml.yaml: Translator",
        {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.2}, "user_config": {"language": "french"}},
    ),
    (
        "kuberay__config__samples__ray-service.mobilenet.yaml: ImageClassifier (integer CPUs)",
        {"num_replicas": 2, "ray_actor_options": {"num_cpus": 1}},
    ),
    ("ray__arithmetic.yaml: Router (graceful shutdown)", {"graceful_shutdown_timeout_s": 0.0001}),
    (
        "ray__use_custom_autoscaling_policy_function.yaml (its policy module is not on this cluster, so left out)",
        {
            "num_replicas": "auto",
            "ray_actor_options": {"num_cpus": 0.0},
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "upscale_delay_s": 1, "downscale_delay_s": 2},
        },
    ),
    (
        "ray__gang_scheduling.yaml: GangApp",
        {
            "num_replicas": 4,
            "ray_actor_options": {"num_cpus": 0.25},
            "gang_scheduling_config": {"gang_size": 2, "gang_placement_strategy": "PACK"},
        },
    ),
    (
        "ray__replica_placement_groups.yaml: valid",
        {"placement_group_bundles": [{"CPU": 1}], "placement_group_strategy": "STRICT_PACK"},
    ),
    (
        "ray__doc_async_inference_autoscaling.yaml: MyConsumer (its policy needs a broker, so left out)",
        {
            "max_ongoing_requests": 5,
            "ray_actor_options": {"num_cpus": 0.1},
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 10, "target_ongoing_requests": 2},
        },
    ),
    (
        "the issue's own case: integer GPUs, Ray's documented health-check and logging options",
        {
            "num_replicas": 1,
            "ray_actor_options": {"num_cpus": 0, "num_gpus": 1},
            "health_check_period_s": 10,
            "health_check_timeout_s": 30,
            "logging_config": {"log_level": "WARNING", "enable_access_log": False},
        },
    ),
]


def ray_apps(ray_cluster) -> dict:
    """Serve's apps as Ray reports them. A dashboard busy starting a dozen replicas on two cores can take a while
    to answer: a slow answer is retried, not a failure of what is being tested."""
    url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    for attempt in range(3):
        try:
            return requests.get(url, timeout=30).json().get("applications") or {}
        except requests.RequestException:
            if attempt == 2:
                raise
            time.sleep(2)
    return {}


def test_real_deployment_options_reach_running_with_no_drift_and_no_pushes_after(
    ray_env, ray_cluster, api, alice, team_a, grant
):
    grant(team_a, ray_env, "100")
    client = api(alice)
    ids = {}
    for i, (source, options) in enumerate(REAL_OPTIONS):
        body = app_body("team-a", ray_env.pk, f"real{i}", deployments=[{"name": "Hello", **options}])
        if i == 0:
            body["logging_config"] = {"log_level": "DEBUG", "encoding": "TEXT"}  # an application-level field too
        resp = client.post("/api/v1/applications/", body, format="json")
        assert resp.status_code == 201, (source, resp.content)
        ids[resp.json()["serve_name"]] = resp.json()["id"]

    def all_running() -> bool:
        seen = ray_apps(ray_cluster)
        states = dict(Application.objects.filter(pk__in=ids.values()).values_list("id", "state"))
        return all(seen.get(n, {}).get("status") == "RUNNING" and states[i] == "running" for n, i in ids.items())

    wait_for(all_running, timeout=300, interval=2, what="every app RUNNING in Ray and in the control plane")
    for app in Application.objects.filter(pk__in=ids.values()):
        assert app.config_diff == [], (app.name, app.config_diff)
    wait_for(lambda: PushState.objects.get(pk=ray_env.pk).poll_token == "", timeout=30, what="the poller to stop")
    cluster = Cluster.objects.get(pk=ray_env.pk)
    assert cluster.drift == []
    pushes = SyncRun.objects.filter(cluster=ray_env).count()
    for _ in range(3):  # three reconcile intervals, as beat runs them
        assert reconcile_cluster(ray_env.pk) == "in-sync"
    assert SyncRun.objects.filter(cluster=ray_env).count() == pushes
    # Ray echoes integers as floats, yet what it runs is what was asked:
    echoed = ray_apps(ray_cluster)["team-a--real11"]["deployed_app_config"]["deployments"][0]["ray_actor_options"]
    assert echoed == {"num_cpus": 0.0, "num_gpus": 1.0}
    assert Application.objects.get(pk=ids["team-a--real11"]).state == "running"


def test_a_burst_before_any_scrape_saw_the_app_is_counted_exactly_with_overlapping_scrapes(
    ray_env, ray_cluster, api, alice, team_a, grant, tmp_path
):
    grant(team_a, ray_env, "4")
    metrics.scrape_cluster(ray_env.pk)  # the cluster is scraped as beat does, before the app exists
    paths = write_models(tmp_path, 3)
    client = api(alice)
    name = f"burst{uuid.uuid4().hex[:6]}"
    body = app_body(
        "team-a",
        ray_env.pk,
        name,
        import_path="examples.multiplexed:app",
        deployments=[{"name": "Mux", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
    )
    app_id = client.post("/api/v1/applications/", body, format="json").json()["id"]
    for i, path in enumerate(paths, start=1):
        client.post(
            "/api/v1/models/",
            {"application": app_id, "deployment": "Mux", "model_id": f"m{i}", "uri": f"file://{path}"},
            format="json",
        )
    serve_name = f"team-a--{name}"

    def catalog_running() -> bool:
        app = ray_apps(ray_cluster).get(serve_name) or {}
        models = ((app.get("deployed_app_config") or {}).get("deployments") or [{}])[0].get("user_config") or {}
        return app.get("status") == "RUNNING" and len(models.get("models", {})) == 3

    wait_for(catalog_running, timeout=120, what="the multiplexed app RUNNING with its catalog")
    sequence = ["m1", "m1", "m2", "m1", "m3", "m2", "m2", "m3", "m1"]
    for model in sequence:  # the burst, right after RUNNING: no scrape has seen this app's counters yet
        resp = requests.get(
            f"{ray_cluster.serve_url}/team-a/{name}", headers={"serve_multiplexed_model_id": model}, timeout=30
        )
        assert resp.status_code == 200, resp.text
    family_requests = "ray_serve_multiplexed_get_model_requests_counter"
    family_loads = "ray_serve_multiplexed_models_load_counter"
    wait_for(lambda: ray_counter(ray_cluster, family_requests, serve_name) == 9, timeout=60, what="Ray's counters")
    time.sleep(1)
    ray_requests = ray_counter(ray_cluster, family_requests, serve_name)
    ray_loads = ray_counter(ray_cluster, family_loads, serve_name)
    assert ray_loads == lru_loads(sequence, slots=2)

    # Force scrapes to overlap: three at once from threads, as a busy worker and beat would start them.
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(metrics.scrape_cluster(ray_env.pk))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics.scrape_cluster(ray_env.pk)

    def stored(family: str) -> float:
        total = 0.0
        for series in Series.objects.filter(cluster=ray_env, name=family, labels__application=serve_name):
            total += sum(series.points.values_list("value", flat=True))
        return total

    assert stored(family_requests) == ray_requests == 9
    assert stored(family_loads) == ray_loads == 5
    from apps.metrics.sources import query

    start, end = timezone.now() - timedelta(minutes=10), timezone.now() + timedelta(seconds=1)
    hit = query(
        "cache_hit_rate",
        cluster=ray_env,
        start=start,
        end=end,
        step=int((end - start).total_seconds()) + 1,
        now=timezone.now(),
        application=serve_name,
    )
    assert hit[0]["points"][0][1] == pytest.approx(1 - 5 / 9)


LEGACY = {
    "applications": [
        {
            "name": "legacy-search",
            "route_prefix": "/legacy-search",
            "import_path": "examples.hello:build",
            "args": {"greeting": "legacy search"},
            "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
        },
        {
            "name": "old_ranker",
            "route_prefix": "/old-ranker",
            "import_path": "examples.hello:build",
            "args": {"greeting": "old ranker"},
            "deployments": [
                {"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 1}}
            ],
        },
    ]
}


def test_a_cluster_that_already_runs_two_apps_is_registered_adopted_and_cleaned_up(
    ray_cluster, celery_worker, api, staff, alice, team_a
):
    reset_serve(ray_cluster)
    requests.put(f"{ray_cluster.dashboard_url}/api/serve/applications/", json=LEGACY, timeout=30).raise_for_status()
    wait_for(
        lambda: all(
            ray_apps(ray_cluster).get(a["name"], {}).get("status") == "RUNNING" for a in LEGACY["applications"]
        ),
        timeout=120,
        what="the two legacy apps RUNNING",
    )
    failures: list[str] = []
    answered = {"/legacy-search": 0, "/old-ranker": 0}
    stop = threading.Event()

    # Every node's proxy listens on the same port here and learns new routes on its own schedule: before measuring
    # gaps, every proxy the kernel hands connections to answers both routes (20 answers in a row each).
    wait_for_every_proxy(ray_cluster, [f"{ray_cluster.serve_url}{route}" for route in answered], timeout=60)

    def keep_calling() -> None:
        while not stop.is_set():
            for route in answered:
                try:
                    resp = requests.get(f"{ray_cluster.serve_url}{route}", timeout=10)
                    if resp.status_code == 200:
                        answered[route] += 1
                    elif not (route == "/legacy-search" and removed.is_set()):
                        failures.append(f"{route}: HTTP {resp.status_code}")
                except requests.RequestException as exc:
                    if not (route == "/legacy-search" and removed.is_set()):
                        failures.append(f"{route}: {type(exc).__name__}")
            time.sleep(0.1)

    removed = threading.Event()
    caller = threading.Thread(target=keep_calling, daemon=True)
    caller.start()
    try:
        admin = api(staff)
        resp = admin.post(
            "/api/v1/clusters/",
            {
                "name": "brownfield",
                "kind": "ray",
                "dashboard_url": ray_cluster.dashboard_url,
                "serve_url": ray_cluster.serve_url,
                "http_port": ray_cluster.serve_port,
                "pools": [{"name": "a100", "resource": "GPU", "capacity": "12"}],
            },
            format="json",
        )
        assert resp.status_code == 201, resp.content
        cluster_id = resp.json()["id"]
        listed = wait_for(
            lambda: {u["name"]: u for u in admin.get(f"/api/v1/clusters/{cluster_id}/unmanaged-apps/").json()} or None,
            what="the inventory taken on registration",
        )
        assert set(listed) == {"legacy-search", "old_ranker"} and all(u["carried"] for u in listed.values())

        # A team deploys onto the cluster: the first push carries both legacy apps unchanged.
        from apps.quotas.services import quota_set

        quota_set(actor=staff, team=team_a, cluster=Cluster.objects.get(pk=cluster_id), pool_name="a100", gpus="2")
        ranker_replica = ray_apps(ray_cluster)["old_ranker"]["deployments"]["Hello"]["replicas"][0]["replica_id"]
        body = app_body("team-a", cluster_id, "fresh")
        app_id = api(alice).post("/api/v1/applications/", body, format="json").json()["id"]
        wait_for(lambda: Application.objects.get(pk=app_id).state == "running", timeout=120, what="the team's app")
        assert {"legacy-search", "old_ranker", "team-a--fresh"} <= set(ray_apps(ray_cluster))

        # Staff adopt one into the team; it keeps its Serve name and its replica: no restart, no gap.
        resp = admin.post(
            f"/api/v1/clusters/{cluster_id}/unmanaged-apps/old_ranker/adopt/",
            {"team": "team-a", "name": "ranker"},
            format="json",
        )
        assert resp.status_code == 201, resp.content
        adopted = resp.json()
        assert adopted["serve_name"] == "old_ranker" and adopted["name"] == "ranker"
        wait_for(
            lambda: SyncRun.objects.filter(cluster_id=cluster_id, state="succeeded").count() >= 2,
            what="the push after adoption",
        )
        time.sleep(3)
        replicas = ray_apps(ray_cluster)["old_ranker"]["deployments"]["Hello"]["replicas"]
        assert [r["replica_id"] for r in replicas] == [ranker_replica]

        # Staff remove the other one: the next push deletes it from Ray.
        removed.set()
        assert admin.delete(f"/api/v1/clusters/{cluster_id}/unmanaged-apps/legacy-search/").status_code == 204
        wait_for(lambda: "legacy-search" not in ray_apps(ray_cluster), timeout=60, what="legacy-search removed")
        time.sleep(2)
    finally:
        stop.set()
        caller.join(timeout=30)
    assert failures == [], failures[:5]
    assert answered["/old-ranker"] > 20 and answered["/legacy-search"] > 10
    assert AuditEvent.objects.filter(action="application.adopt", team__slug="team-a").exists()
    assert AuditEvent.objects.filter(action="cluster.unmanaged_app_remove", before__app="legacy-search").exists()
    assert AuditEvent.objects.filter(action="cluster.inventory").exists()
    assert requests.get(f"{ray_cluster.serve_url}/old-ranker", timeout=10).json() == {"message": "old ranker, world"}
