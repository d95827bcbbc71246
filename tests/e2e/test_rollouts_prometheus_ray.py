"""Canary rollouts on a cluster whose metrics source is Prometheus (issue 27, "either metric source"): a real
Prometheus scrapes the test Ray through the dashboard's service discovery, the control plane's embedded store holds
none of the app's request series, and the rollout's gates still pass a good version step by step and roll back a
bad one, from Prometheus's answers alone."""

from __future__ import annotations

import time

import pytest

from apps.applications.models import Application
from apps.deploys.observe import observe_cluster
from apps.metrics.models import MetricsConfig, Series
from tests.conftest import app_body, wait_for, wait_for_every_proxy
from tests.e2e.test_prometheus_ray import prometheus  # noqa: F401 - the fixture
from tests.e2e.test_rollouts_ray import HOST_NOISE_GATES, Client, drive, version

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

STEP_S = 20


def test_the_gates_judge_from_prometheus_on_a_prometheus_cluster(
    settings,
    ray_cluster,
    ray_env,
    prometheus,  # noqa: F811
    team_a,
    grant,
    alice,
    api,
):
    settings.ROLLOUT_GRACE_S = 5
    grant(team_a, ray_env, "2")
    MetricsConfig.objects.filter(pk=ray_env.pk).update(
        metrics_source="prometheus", prometheus_url=prometheus.url, prometheus_matchers={"ray_cluster": "cp-test"}
    )
    client = api(alice)
    body = {**app_body("team-a", ray_env.pk, "web"), **version("v1")}
    app_id = client.post("/api/v1/applications/", body, format="json").json()["id"]

    def running() -> bool:
        observe_cluster(ray_env.pk)
        app = Application.objects.get(pk=app_id)
        return app.state == "running" and app.deployed_revision_id == app.current_revision_id

    wait_for(running, timeout=180, what="v1 RUNNING")
    url = f"{ray_cluster.serve_url}/team-a/web"
    wait_for_every_proxy(ray_cluster, [url])

    def roll(spec: dict, until, what: str):
        resp = client.post(
            f"/api/v1/applications/{app_id}/rollouts/",
            {"spec": spec, "steps": [50, 100], "step_seconds": STEP_S, "gates": HOST_NOISE_GATES},
            format="json",
        )
        assert resp.status_code == 201, resp.content
        return drive(ray_env.pk, resp.json()["id"], until, timeout=300, what=what)

    with Client(url) as traffic:
        time.sleep(2)
        good = roll(version("v2"), lambda r: r.phase == "done", "the good rollout done")
        wait_for_every_proxy(ray_cluster, [url])
        bad = roll(version("v3", error_rate=0.3), lambda r: r.state == "rolled_back", "the bad one rolled back")
        traffic.stop.set()
    print(f"\nPrometheus-judged verdicts: good {[(v['verdict'], v['canary']) for v in good.verdicts]}")
    print(f"bad {bad.verdicts[0]['verdict']}: {bad.reason}")
    assert good.state == "succeeded" and [v["verdict"] for v in good.verdicts] == ["pass", "pass"], [
        (v["verdict"], v["reason"]) for v in good.verdicts
    ]
    assert all(v["canary"]["requests"] >= 20 for v in good.verdicts)
    assert bad.verdicts[0]["verdict"] == "fail" and "5xx" in bad.reason
    assert bad.verdicts[0]["canary"]["error_rate"] > 0.1
    assert len(traffic.answers) > 100
    # The embedded store never held the app's request counters: every verdict above was read from Prometheus.
    assert not Series.objects.filter(cluster_id=ray_env.pk, name__startswith="ray_serve_num_http_requests").exists()
    assert Application.objects.get(pk=app_id).current_revision.number == 2
