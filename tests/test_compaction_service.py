"""Compaction planning from observed state, execution guards, policy and the plan page (no Ray needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.compaction import services
from apps.compaction.models import CompactionPlan

pytestmark = pytest.mark.django_db


def observed(cluster, alice, team_a):
    """Three workers, one replica of 1 GPU on each: two nodes can be freed."""
    cluster.nodes = [
        {
            "node_id": "head",
            "node_ip": "10.0.0.1",
            "state": "ALIVE",
            "is_head_node": True,
            "resources_total": {"CPU": 1},
            "labels": {},
        }
    ]
    for i in range(3):
        cluster.nodes.append(
            {
                "node_id": f"w{i}",
                "node_ip": f"10.0.0.{i + 2}",
                "state": "ALIVE",
                "is_head_node": False,
                "resources_total": {"CPU": 2, "GPU": 4, "memory": 10**9},
                "labels": {"pool": "a100"},
            }
        )
    cluster.save()
    spec = {
        "route_prefix": "/a",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 3, "ray_actor_options": {"num_gpus": 1}}],
    }
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="a", spec=spec)
    app.state = Application.State.RUNNING
    app.status = {
        "status": "RUNNING",
        "deployments": {
            "Hello": {
                "status": "HEALTHY",
                "required_resources": {"CPU": 0.5, "GPU": 1},
                "replicas": [{"replica_id": f"r{i}", "node_id": f"w{i}", "state": "RUNNING"} for i in range(3)],
            }
        },
    }
    app.save()
    return app


def test_plan_from_observed_state(cluster, alice, team_a, grant, staff):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a)
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert len(plan.nodes_to_drain) == 2 and len(plan.moves) == 2
    assert plan.gpus_freed == 8 and plan.gpu_hours_per_day == 192
    assert [s.node_id for s in plan.steps.all()] == plan.nodes_to_drain
    assert plan.steps.first().replicas[0]["team"] == "team-a"
    again = services.plan_create(actor=staff, cluster=cluster)
    plan.refresh_from_db()
    assert plan.state == "superseded" and again.state == "planned"


def test_execute_guards(cluster, alice, team_a, grant, staff, api):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a)
    plan = services.plan_create(actor=staff, cluster=cluster)
    other = CompactionPlan.objects.create(cluster=cluster, input={}, state="executing")
    resp = api(staff).post(f"/api/v1/compaction/plans/{plan.pk}/execute/")
    assert resp.status_code == 400 and "Another compaction" in resp.json()["cluster"][0]
    other.state = "failed"
    other.save()
    empty = CompactionPlan.objects.create(cluster=cluster, input={}, state="planned")
    assert api(staff).post(f"/api/v1/compaction/plans/{empty.pk}/execute/").status_code == 400
    assert api(alice).get("/api/v1/compaction/plans/").status_code == 403


def test_unobserved_cluster_cannot_be_planned(cluster, staff, api):
    resp = api(staff).post("/api/v1/compaction/plans/", {"cluster": cluster.pk}, format="json")
    assert resp.status_code == 400 and "not been observed" in resp.json()["cluster"][0]


def test_drained_nodes_are_not_targets(cluster, alice, team_a, grant, staff):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a)
    plan = services.plan_create(actor=staff, cluster=cluster)
    plan.steps.filter(node_id=plan.nodes_to_drain[0]).update(state="succeeded")
    state = services.planner_input(cluster)
    assert plan.nodes_to_drain[0] not in {n["id"] for n in state["nodes"]}


def test_policy(cluster, alice, team_a, grant, staff, monkeypatch, django_capture_on_commit_callbacks):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a)
    cluster.refresh_from_db()
    cluster.compaction_policy = "off"
    cluster.save()
    assert services.policy_tick(cluster.pk) == "off"
    cluster.compaction_policy = "suggest"
    cluster.save()
    assert services.policy_tick(cluster.pk) == "deploy in progress"  # the app's push has not happened
    cluster.pushed_generation = cluster.desired_generation
    cluster.save()
    assert services.policy_tick(cluster.pk) == "suggested"
    assert services.policy_tick(cluster.pk) == "suggested already"
    assert CompactionPlan.objects.filter(trigger="suggest").count() == 1
    cluster.compaction_policy, cluster.compaction_window = "automatic", "02:00-03:00"
    cluster.save()
    monkeypatch.setattr(services.timezone, "now", lambda: datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    assert services.policy_tick(cluster.pk) == "outside window"
    launched = []
    from apps.core.jobs import task

    monkeypatch.setattr(task("workers.tasks.compaction.execute_plan"), "delay", lambda pk: launched.append(pk))
    cluster.compaction_window = ""
    cluster.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.policy_tick(cluster.pk) == "executing"
    assert launched == [CompactionPlan.objects.get(trigger="automatic").pk], "the policy started that plan's execution"
    assert services.policy_tick(cluster.pk) == "compaction running"


@pytest.mark.parametrize(
    ("window", "hour", "inside"),
    [
        ("01:00-05:00", 3, True),
        ("01:00-05:00", 6, False),
        ("22:00-02:00", 23, True),
        ("22:00-02:00", 1, True),
        ("22:00-02:00", 12, False),
        ("bad", 1, False),
        ("", 1, True),
    ],
)
def test_window(window, hour, inside):
    assert services.in_window(window, datetime(2026, 1, 1, hour, 30, tzinfo=UTC)) is inside


def test_plan_page_shows_before_and_after(cluster, alice, team_a, grant, staff):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a)
    c = Client()
    c.force_login(staff)
    resp = c.post(f"/clusters/{cluster.pk}/compaction/")
    assert resp.status_code == 302
    page = c.get(resp["Location"]).content.decode()
    assert "Before" in page and "After" in page and "GPU-hours saved per day" in page
    assert page.count("← moved") == 2 and "Execute: drain 2 nodes" in page
    c.force_login(alice)
    assert c.get(resp["Location"]).status_code == 404


def test_replica_moves_without_a_config_change_are_shown(cluster, alice, team_a, grant, staff):
    from django.utils import timezone

    from apps.clusters.models import Cluster
    from apps.deploys.sync import _record_replica_moves, _replica_moves

    grant(team_a, cluster, "8")
    app = observed(cluster, alice, team_a)
    new = {
        "deployments": {
            "Hello": {
                "replicas": [
                    {"replica_id": "r0", "node_id": "w0", "state": "RUNNING"},
                    {"replica_id": "r1", "node_id": "w1", "state": "RUNNING"},
                    {"replica_id": "r9", "node_id": "w1", "state": "RUNNING"},
                ]
            }
        }
    }
    moves = _replica_moves(app, app.status, new, timezone.now())
    assert moves == [
        {**moves[0], "app": app.serve_name, "deployment": "Hello", "from": ["w2"], "to": ["w1"], "replicas": 1}
    ]
    _record_replica_moves(cluster, moves)
    recorded = Cluster.objects.get(pk=cluster.pk).replica_moves
    assert recorded[0]["by"] == "Serve (or Ray) on its own"
    assert _replica_moves(app, app.status, app.status, timezone.now()) == []
    c = Client()
    c.force_login(staff)
    assert "Replica moves seen without a config change (1)" in c.get(f"/clusters/{cluster.pk}/").content.decode()
