"""Quota admission: exact fractions, concurrency, lowered quotas, CPU quotas, requests and decisions."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from apps.applications.models import Application
from apps.audit.models import AuditEvent
from apps.quotas.models import Quota, QuotaRequest
from tests.conftest import app_body


def gpu_app(team: str, cluster: int, name: str, gpus: float, replicas: int = 1) -> dict:
    return app_body(
        team,
        cluster,
        name,
        deployments=[{"name": "D", "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}],
    )


@pytest.mark.django_db
def test_fractions_add_up_exactly_at_the_boundary(team_a, cluster, grant, api, alice):
    grant(team_a, cluster, "1")
    client = api(alice)
    for name, gpus in (("a", 0.25), ("b", 0.25), ("c", 0.5)):
        assert (
            client.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, name, gpus), format="json").status_code
            == 201
        )
    resp = client.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "d", 0.0001), format="json")
    assert resp.status_code == 400
    assert resp.json()["quota_detail"][0]["demand"] == "1.0001"
    # 0.1 x 3 is exactly 0.3 here, where floats give 0.30000000000000004
    grant(team_a, cluster, "1.3")
    assert (
        client.post(
            "/api/v1/applications/", gpu_app("team-a", cluster.pk, "e", 0.1, replicas=3), format="json"
        ).status_code
        == 201
    )
    q = client.get("/api/v1/quotas/?team=team-a").json()["results"][0]
    assert q["gpus"] == "1.3000" and Decimal(q["in_use"]) == Decimal("1.3")


@pytest.mark.django_db
def test_dry_run_answers_would_it_fit(team_a, cluster, grant, api, alice):
    grant(team_a, cluster, "1")
    client = api(alice)
    fits = client.post("/api/v1/applications/?dry_run=true", gpu_app("team-a", cluster.pk, "a", 1), format="json")
    assert fits.status_code == 200 and fits.json()["quota"][0]["demand"] == "1"
    too_big = client.post("/api/v1/applications/?dry_run=true", gpu_app("team-a", cluster.pk, "a", 1.5), format="json")
    assert too_big.status_code == 400 and "quota" in too_big.json()
    assert Application.objects.count() == 0


@pytest.mark.django_db
def test_autoscaling_max_and_rollback_are_admitted_too(team_a, cluster, grant, api, alice):
    grant(team_a, cluster, "2")
    client = api(alice)
    app = client.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "a", 0.5), format="json").json()
    url = f"/api/v1/applications/{app['id']}/"
    auto = [
        {
            "name": "D",
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 5},
            "ray_actor_options": {"num_gpus": 0.5},
        }
    ]
    resp = client.patch(url, {"deployments": auto}, format="json")
    assert resp.status_code == 400 and resp.json()["quota_detail"][0]["demand"] == "2.5"
    big = [{"name": "D", "num_replicas": 4, "ray_actor_options": {"num_gpus": 0.5}}]
    assert client.patch(url, {"deployments": big}, format="json").status_code == 200
    assert client.patch(url, {"deployments": [dict(big[0], num_replicas=1)]}, format="json").status_code == 200
    grant(team_a, cluster, "1")
    # Rolling back to revision 2 (2 GPUs) would grow past the lowered quota.
    resp = client.post(f"{url}rollback/", {"revision": 2}, format="json")
    assert resp.status_code == 400 and "quota" in resp.json()


@pytest.mark.django_db
def test_lowered_quota_refuses_growth_but_keeps_running_apps(team_a, cluster, grant, api, alice, client):
    grant(team_a, cluster, "4")
    c = api(alice)
    app = c.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "a", 1, replicas=3), format="json").json()
    grant(team_a, cluster, "2")
    assert Application.objects.get(pk=app["id"]).deleted_at is None
    url = f"/api/v1/applications/{app['id']}/"
    grow = c.patch(
        url, {"deployments": [{"name": "D", "num_replicas": 4, "ray_actor_options": {"num_gpus": 1}}]}, format="json"
    )
    assert grow.status_code == 400
    shrink = c.patch(
        url, {"deployments": [{"name": "D", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1}}]}, format="json"
    )
    assert shrink.status_code == 200
    new = c.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "b", 0.5), format="json")
    assert new.status_code == 400
    client.force_login(alice)
    grant(team_a, cluster, "1")
    page = client.get("/teams/team-a/quota/").content.decode()
    assert 'data-over="true"' in page and "over quota" in page


@pytest.mark.django_db
def test_cpu_quota_is_enforced_the_same_way(team_a, cluster, staff, api, alice):
    from apps.quotas.services import quota_set

    quota_set(actor=staff, team=team_a, cluster=cluster, pool_name="a100", gpus=Decimal(4), cpus=Decimal("0.8"))
    c = api(alice)
    assert (
        c.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "a", 0.5, replicas=8), format="json").status_code
        == 201
    )
    resp = c.post("/api/v1/applications/", gpu_app("team-a", cluster.pk, "b", 0, replicas=1), format="json")
    assert resp.status_code == 400
    assert resp.json()["quota"] == ["team team-a needs 0.9 CPU in a100 on prod-1, quota 0.8, in use 0.8"]


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_writes_race_for_the_last_gpus(team_a, cluster, grant, api, alice):
    grant(team_a, cluster, "2.5")
    clients = [api(alice) for _ in range(10)]
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(10)

    def write(i: int) -> None:
        barrier.wait()
        resp = clients[i].post("/api/v1/applications/", gpu_app("team-a", cluster.pk, f"r{i}", 0.5), format="json")
        with lock:
            codes.append(resp.status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] * 5 + [400] * 5
    assert Application.objects.filter(team=team_a).count() == 5


@pytest.mark.django_db
def test_quota_request_flow_and_audit(team_a, cluster, api, alice, staff, bob, charlie, team_b):
    c = api(alice)
    resp = c.post(
        "/api/v1/quota-requests/",
        {"team": "team-a", "cluster": cluster.pk, "pool": "a100", "gpus": "3.5", "reason": "launch"},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    req_id = resp.json()["id"]
    bad = c.post(
        "/api/v1/quota-requests/",
        {"team": "team-a", "cluster": cluster.pk, "pool": "h100", "gpus": "x", "reason": ""},
        format="json",
    )
    assert bad.status_code == 400 and {"pool", "gpus", "reason"} <= set(bad.json())
    assert api(bob).get(f"/api/v1/quota-requests/{req_id}/").status_code == 404
    assert api(bob).post(f"/api/v1/quota-requests/{req_id}/approve/").status_code == 404
    assert c.post(f"/api/v1/quota-requests/{req_id}/approve/").status_code == 403
    resp = api(staff).post(f"/api/v1/quota-requests/{req_id}/approve/", {"comment": "ok for Q4"}, format="json")
    assert resp.status_code == 200 and resp.json()["state"] == "approved"
    assert Quota.objects.get(team=team_a).gpus == Decimal("3.5")
    assert api(staff).post(f"/api/v1/quota-requests/{req_id}/reject/").status_code == 400
    seen = c.get("/api/v1/quota-requests/").json()["results"][0]
    assert seen["state"] == "approved" and seen["comment"] == "ok for Q4" and seen["decided_by"] == "platform"
    actions = list(AuditEvent.objects.filter(team=team_a).values_list("action", flat=True))
    assert {"quota_request.create", "quota_request.approved", "quota.set"} <= set(actions)
    assert QuotaRequest.objects.get(pk=req_id).decided_by == staff
