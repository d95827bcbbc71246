"""Compaction: plans from a fresh observation, execution (drain together, wait for Serve, verify each move), policy and
the plan page, against a fake Serve at the dashboard client (tests/e2e/test_compaction_ray.py has real Ray)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.clusters.models import Cluster
from apps.compaction import execution, inputs, policy, services
from apps.compaction.models import CompactionPlan, CompactionSettings
from apps.compaction.planner import plan as run_planner
from apps.deploys.models import PushState
from tests.fake_serve import FakeServe

pytestmark = pytest.mark.django_db


def observed(cluster, alice, team_a, monkeypatch, **kwargs):
    """Three workers, one replica of 1 GPU on each (app team-a--a, managed): two nodes can be freed. What Ray
    reports comes from a FakeServe behind the dashboard client; nothing is stored before the plan observes."""
    spec = {
        "route_prefix": "/team-a/a",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 3, "ray_actor_options": {"num_gpus": 1}}],
    }
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="a", spec=spec)
    fake = FakeServe(nodes={"w0": 4, "w1": 4, "w2": 4}, **kwargs)
    fake.add(app.serve_name, "Hello", 1.0, ["w0", "w1", "w2"])
    serve(monkeypatch, fake)
    return app, fake


def serve(monkeypatch, fake: FakeServe) -> None:
    from workers.clients.ray_dashboard import RayDashboardClient

    monkeypatch.setattr(RayDashboardClient, "get_serve_applications", lambda self: fake.get_serve_applications())
    monkeypatch.setattr(RayDashboardClient, "list_nodes", lambda self: fake.list_nodes())
    monkeypatch.setattr(execution, "client_for", lambda cluster, timeout=None: fake)

    def via_job(client, *, node_ids, reason_message):
        fake.drain(node_ids)
        return "serve-control-plane-drain-test"

    monkeypatch.setattr(execution, "drain_nodes_via_job", via_job)
    monkeypatch.setattr(execution.time, "sleep", lambda s: None)


def test_plan_is_made_from_an_observation_taken_for_it(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    app, fake = observed(cluster, alice, team_a, monkeypatch)
    assert cluster.nodes == [] and Application.objects.get(pk=app.pk).status == {}, "nothing stored beforehand"
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert len(plan.nodes_to_drain) == 2 and len(plan.moves) == 2
    assert plan.gpus_freed == 8 and plan.gpu_hours_per_day == 192
    assert [s.node_id for s in plan.steps.all()] == plan.nodes_to_drain
    assert plan.steps.first().replicas[0]["team"] == "team-a"
    assert plan.observed_at is not None and (plan.created_at - plan.observed_at).total_seconds() < 5
    assert len(Application.objects.get(pk=app.pk).status["deployments"]["Hello"]["replicas"]) == 3
    again = services.plan_create(actor=staff, cluster=cluster)
    plan.refresh_from_db()
    assert plan.state == "superseded" and again.state == "planned"


def test_replicas_of_apps_the_control_plane_does_not_manage_count(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    fake.add("someone-elses", "Big", 3.0, ["w0", "w1"])  # w0 and w1 are full now: nothing can move
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert {r["app"] for r in plan.input["replicas"]} == {"team-a--a", "someone-elses"}
    assert plan.nodes_to_drain == []
    cluster.refresh_from_db()
    managed_only = inputs.planner_input(cluster)  # what the stored statuses of managed apps alone would say
    assert len(run_planner(managed_only)["nodes_to_drain"]) == 2


def test_unreachable_cluster_gets_no_plan(cluster, alice, team_a, grant, staff, api, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    fake.unreachable = True
    resp = api(staff).post("/api/v1/compaction/plans/", {"cluster": cluster.pk}, format="json")
    assert resp.status_code == 400 and "could not be observed" in resp.json()["cluster"][0], resp.json()
    assert not CompactionPlan.objects.exists()


def test_no_plan_while_serve_moves_replicas(cluster, alice, team_a, grant, staff, api, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    fake.replicas[0].state = "PENDING_MIGRATION"
    resp = api(staff).post("/api/v1/compaction/plans/", {"cluster": cluster.pk}, format="json")
    assert resp.status_code == 400 and "Serve is moving replicas" in resp.json()["cluster"][0]
    assert "1 PENDING_MIGRATION" in resp.json()["cluster"][0]


def test_drained_nodes_are_not_targets(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    plan.steps.filter(node_id=plan.nodes_to_drain[0]).update(state="succeeded")
    cluster.refresh_from_db()
    state = inputs.planner_input(cluster)
    assert plan.nodes_to_drain[0] not in {n["id"] for n in state["nodes"]}
    again = services.plan_create(actor=staff, cluster=cluster)
    assert plan.nodes_to_drain[0] not in {n["id"] for n in again.input["nodes"]}


def test_execute_guards(cluster, alice, team_a, grant, staff, api, monkeypatch):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    other = CompactionPlan.objects.create(cluster=cluster, input={}, state="executing")
    resp = api(staff).post(f"/api/v1/compaction/plans/{plan.pk}/execute/")
    assert resp.status_code == 400 and "Another compaction" in resp.json()["cluster"][0]
    other.state = "failed"
    other.save()
    empty = CompactionPlan.objects.create(cluster=cluster, input={}, state="planned")
    assert api(staff).post(f"/api/v1/compaction/plans/{empty.pk}/execute/").status_code == 400
    assert api(alice).get("/api/v1/compaction/plans/").status_code == 403


def test_execution_needs_only_the_dashboard(cluster, make_cluster):
    ready = services.execution_readiness(cluster)
    assert ready["method"] == "job" and ready["ready"] and cluster.dashboard_url in ready["via"]
    override = make_cluster(name="with-gcs", gcs_address="10.0.0.1:6379")
    assert services.execution_readiness(override)["method"] == "gcs"
    Cluster.objects.filter(pk=cluster.pk).update(dashboard_url="", health="unreachable", health_message="refused")
    cluster.refresh_from_db()
    missing = services.execution_readiness(cluster)["missing"]
    assert len(missing) == 2 and "no dashboard URL and no GCS address" in missing[0] and "refused" in missing[1]


def execute(plan, **kwargs):
    CompactionPlan.objects.filter(pk=plan.pk).update(state="executing")
    return execution.run_plan(plan.pk, **kwargs)


def test_execution_drains_all_nodes_together_and_verifies_every_move(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert execute(plan) == "succeeded", CompactionPlan.objects.get(pk=plan.pk).error
    plan.refresh_from_db()
    assert fake.drain_calls == [plan.nodes_to_drain], "one drain call with every node of the plan"
    assert plan.drain_method == "job" and plan.drain_job == "serve-control-plane-drain-test"
    out = plan.outcome
    assert out["moves_planned"] == 2 and out["moves_made"] == 2 and out["moved_twice"] == 0 and not out["problems"]
    kept = ({"w0", "w1", "w2"} - set(plan.nodes_to_drain)).pop()
    assert all(r["actual_to"] == kept and r["as_planned"] for r in out["replicas"])
    assert {r["node"] for r in out["final"]} == {kept} and len(out["final"]) == 3
    assert set(out["seconds_per_node"]) == set(plan.nodes_to_drain)
    assert [s.state for s in plan.steps.all()] == ["succeeded", "succeeded"]
    assert all("emptied" in s.message for s in plan.steps.all())


def test_drains_that_land_one_after_another_show_as_second_moves(cluster, alice, team_a, grant, staff, monkeypatch):
    """What node-by-node draining did: a replacement lands on a node drained next, and moves again."""
    grant(team_a, cluster, "8")
    spec = {
        "route_prefix": "/team-a/a",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 3, "ray_actor_options": {"num_gpus": 1}}],
    }
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="a", spec=spec)
    fake = FakeServe(nodes={"w0": 4, "w1": 4, "w2": 4})
    fake.add(app.serve_name, "Hello", 1.0, ["w0", "w1", "w2", "w2"])
    serve(monkeypatch, fake)
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert plan.nodes_to_drain[:2] == ["w0", "w1"], plan.nodes_to_drain
    fake.late = {"w1": 3}  # w1's drain takes effect three ticks after w0's: w0's replica goes to w1 first
    assert execute(plan) == "failed"
    plan.refresh_from_db()
    assert plan.outcome["moved_twice"] >= 1
    assert "verification" in plan.error and "a second move" in plan.error


def test_a_plan_the_cluster_outgrew_is_not_executed(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    fake.add("newcomer", "X", 1.0, [plan.nodes_to_drain[0]])
    assert execute(plan) == "failed"
    plan.refresh_from_db()
    assert "changed since the plan" in plan.error and fake.drain_calls == [], "nothing drained"
    assert {s.state for s in plan.steps.all()} == {"skipped"}


def test_execution_waits_while_serve_migrates_on_its_own(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    _, fake = observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    rep = fake.replicas[0]
    rep.state = "PENDING_MIGRATION"  # Serve's pack compaction moves it; it stops after a few ticks
    ticks_at_drain = []
    original = fake.drain

    def drain(node_ids):
        ticks_at_drain.append(fake.ticks)
        original(node_ids)

    fake.drain = drain
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(execution.time, "monotonic", lambda: next(clock) * 0.5)
    calls = {"n": 0}
    real_tick = fake.tick

    def tick():
        calls["n"] += 1
        if calls["n"] == 4:
            rep.state = "RUNNING"  # Serve is done
        real_tick()

    fake.tick = tick
    assert execute(plan) == "succeeded", CompactionPlan.objects.get(pk=plan.pk).error
    plan.refresh_from_db()
    assert ticks_at_drain and ticks_at_drain[0] >= 4, "drained only after Serve stopped moving replicas"
    assert plan.outcome["waited_for_serve_s"] > 0


def test_verify_moves_counts_each_replica():
    baseline = {
        "replicas": [
            {"id": "a", "node": "n1", "app": "x", "deployment": "D"},
            {"id": "b", "node": "n2", "app": "x", "deployment": "D"},
            {"id": "c", "node": "n3", "app": "x", "deployment": "D"},
        ]
    }
    moves = [{"replica": "a", "from": "n1", "to": "n3"}]
    final = {"b": {"key": "x/D", "node": "n2"}, "c": {"key": "x/D", "node": "n3"}, "a2": {"key": "x/D", "node": "n2"}}
    seen = {**final, "a": {"key": "x/D", "node": "n1"}}
    out = execution.verify_moves(moves, baseline, ["n1"], seen, final)
    assert out["moves_made"] == 1 and out["as_planned"] == 0 and out["moved_twice"] == 0 and not out["problems"]
    assert out["replicas"][0] == {
        "replica": "a",
        "app": "x",
        "deployment": "D",
        "from": "n1",
        "planned_to": "n3",
        "actual_to": "n2",
        "replacement": "a2",
        "as_planned": False,
    }
    # A replacement that was itself replaced, and a kept node's replica that moved: both are reported.
    seen2 = {**seen, "a1": {"key": "x/D", "node": "n1"}}
    final2 = {"c": final["c"], "a2": final["a2"], "b2": {"key": "x/D", "node": "n3"}}
    out = execution.verify_moves(moves, baseline, ["n1"], seen2, final2)
    assert out["moved_twice"] == 1
    assert any("a second move" in p for p in out["problems"]) and any("kept node" in p for p in out["problems"])


def test_policy(cluster, alice, team_a, grant, staff, monkeypatch, django_capture_on_commit_callbacks):
    grant(team_a, cluster, "8")
    app, fake = observed(cluster, alice, team_a, monkeypatch)
    Application.objects.filter(pk=app.pk).update(state="running", deployed_revision=app.current_revision)
    cluster.refresh_from_db()
    settings_row = CompactionSettings.objects.get(pk=cluster.pk)
    settings_row.compaction_policy = "off"
    settings_row.save()
    assert policy.policy_tick(cluster.pk) == "off"
    settings_row.compaction_policy = "suggest"
    settings_row.save()
    assert policy.policy_tick(cluster.pk) == "deploy in progress"  # the app's push has not happened
    PushState.objects.filter(pk=cluster.pk).update(pushed_generation=cluster.desired_generation)
    fake.replicas[0].state = "PENDING_MIGRATION"
    assert policy.policy_tick(cluster.pk) == "Serve is moving replicas"
    fake.replicas[0].state = "RUNNING"
    assert policy.policy_tick(cluster.pk) == "suggested"
    assert policy.policy_tick(cluster.pk) == "suggested already"
    assert CompactionPlan.objects.filter(trigger="suggest").count() == 1
    settings_row.compaction_policy, settings_row.compaction_window = "automatic", "02:00-03:00"
    settings_row.save()
    monkeypatch.setattr(execution.timezone, "now", lambda: datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    assert policy.policy_tick(cluster.pk) == "outside window"
    launched = []
    from apps.core.jobs import task

    monkeypatch.setattr(task("workers.tasks.compaction.execute_plan"), "delay", lambda pk: launched.append(pk))
    settings_row.compaction_window = ""
    settings_row.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert policy.policy_tick(cluster.pk) == "executing"
    assert launched == [CompactionPlan.objects.get(trigger="automatic").pk], "the policy started that plan's execution"
    assert policy.policy_tick(cluster.pk) == "compaction running"


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
    assert policy.in_window(window, datetime(2026, 1, 1, hour, 30, tzinfo=UTC)) is inside


def test_plan_page_shows_before_after_readiness_and_actual(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a, monkeypatch)
    c = Client()
    c.force_login(staff)
    resp = c.post(f"/clusters/{cluster.pk}/compaction/")
    assert resp.status_code == 302
    page = c.get(resp["Location"]).content.decode()
    assert "Before" in page and "After (planned)" in page and "GPU-hours saved per day" in page
    assert page.count("← moved") == 2 and "Execute: drain 2 nodes" in page
    assert "taken for this plan at" in page and "s before the plan was made" in page
    assert "a short Ray job on the head node" in page and "Execution will not work yet" not in page
    # The maps colour GPU fill by team as the cluster page does, with its legend; node ids as long as elsewhere.
    cluster_page = c.get(f"/clusters/{cluster.pk}/").content.decode()
    legend = '<span class="badge" style="background: #0d6efd">team-a</span>'
    assert legend in cluster_page and legend in page
    assert page.count('style="width: 25.0%; background: #0d6efd" title="team-a: 1 GPU"') >= 2, page
    plan = CompactionPlan.objects.get()
    assert all(f'<code title="{n["id"]}">{n["id"][:12]}</code>' in page for n in plan.input["nodes"])
    execute(plan)
    page = c.get(resp["Location"]).content.decode()
    assert "After (actual, as Ray reported it)" in page and page.count('data-as-planned="yes"') == 2
    assert "replicas moved more than once: <strong>0</strong>" in page
    c.force_login(alice)
    assert c.get(resp["Location"]).status_code == 404


def test_plan_page_says_what_is_missing(cluster, alice, team_a, grant, staff, monkeypatch):
    grant(team_a, cluster, "8")
    observed(cluster, alice, team_a, monkeypatch)
    plan = services.plan_create(actor=staff, cluster=cluster)
    Cluster.objects.filter(pk=cluster.pk).update(dashboard_url="")
    c = Client()
    c.force_login(staff)
    page = c.get(f"/compaction/{plan.pk}/").content.decode()
    assert "Execution will not work yet" in page and "no dashboard URL and no GCS address" in page
    assert "disabled" in page.split("Execute: drain")[0].rsplit("<button", 1)[1]


def test_replica_moves_without_a_config_change_are_shown(cluster, alice, team_a, grant, staff, monkeypatch):
    from django.utils import timezone

    from apps.deploys.observe import _record_replica_moves, _replica_moves, observe

    grant(team_a, cluster, "8")
    app, fake = observed(cluster, alice, team_a, monkeypatch)
    observe(cluster.pk)
    app.refresh_from_db()
    r0, r1, _ = (r["replica_id"] for r in app.status["deployments"]["Hello"]["replicas"])
    new = {
        "last_deployed_time_s": app.status.get("last_deployed_time_s"),
        "deployments": {
            "Hello": {
                "replicas": [
                    {"replica_id": r0, "node_id": "w0", "state": "RUNNING"},
                    {"replica_id": r1, "node_id": "w1", "state": "RUNNING"},
                    {"replica_id": "r9", "node_id": "w1", "state": "RUNNING"},
                ]
            }
        },
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


def test_a_move_read_halfway_is_counted_once_when_done_and_a_redeploy_is_no_move():
    """Serve migrates: the old replica PENDING_MIGRATION, its replacement STARTING. An observation taken then is
    no settled placement; it carries the last one forward, and the next settled reading shows the move, once."""
    from types import SimpleNamespace

    from django.utils import timezone

    from apps.deploys.observe import _carried, _replica_moves

    app = SimpleNamespace(serve_name="team-a--x")

    def doc(*reps: tuple[str, str, str], deployed: float = 1.0) -> dict:
        replicas = [{"replica_id": rid, "node_id": node, "state": state} for rid, node, state in reps]
        return {"last_deployed_time_s": deployed, "deployments": {"Hello": {"replicas": replicas}}}

    before = doc(("r1", "w1", "RUNNING"), ("r2", "w2", "RUNNING"))
    halfway = doc(("r1", "w1", "RUNNING"), ("r2", "w2", "PENDING_MIGRATION"), ("r3", "w1", "STARTING"))
    halfway2 = doc(("r1", "w1", "RUNNING"), ("r2", "w2", "PENDING_MIGRATION"), ("r3", "w1", "RUNNING"))
    done = doc(("r1", "w1", "RUNNING"), ("r3", "w1", "RUNNING"))
    now = timezone.now()
    assert _replica_moves(app, before, halfway, now) == []
    halfway["settled"] = _carried(before, halfway)
    assert halfway["settled"] == {"Hello": {"r1": "w1", "r2": "w2"}}
    halfway2["settled"] = _carried(halfway, halfway2)
    assert _replica_moves(app, halfway, halfway2, now) == []
    moves = _replica_moves(app, halfway2, done, now)
    assert [(m["from"], m["to"], m["replicas"]) for m in moves] == [(["w2"], ["w1"], 1)]
    assert _carried(halfway2, done) is None  # settled: its own placement, nothing carried
    assert _replica_moves(app, done, done, now) == []
    redeployed = doc(("r7", "w2", "RUNNING"), ("r8", "w2", "RUNNING"), deployed=2.0)
    assert _replica_moves(app, done, redeployed, now) == []  # a new deploy's replicas are no move
    starting = doc(("r7", "w2", "STARTING"), deployed=2.0)
    assert _carried(done, starting) is None


def test_the_cluster_page_names_the_apps_serve_is_migrating_and_no_others(cluster, alice, team_a, grant, staff):
    """The banner reads the stored statuses that hold PENDING_MIGRATION (found by the database, not by parsing
    every app's status): a settled app is not named, a migrating one is, and a member sees no banner."""
    grant(team_a, cluster, "8")
    spec = {"import_path": "examples.hello:app", "deployments": [{"name": "Hello", "num_replicas": 1}]}
    calm = application_create(
        actor=alice, team=team_a, cluster=cluster, name="calm", spec={**spec, "route_prefix": "/team-a/calm"}
    )
    moving = application_create(
        actor=alice, team=team_a, cluster=cluster, name="moving", spec={**spec, "route_prefix": "/team-a/moving"}
    )

    def status(*states: str) -> dict:
        reps = [{"replica_id": f"r{i}", "node_id": "w1", "state": s} for i, s in enumerate(states)]
        return {"status": "RUNNING", "deployments": {"Hello": {"status": "HEALTHY", "replicas": reps}}}

    Application.objects.filter(pk=calm.pk).update(status=status("RUNNING"))
    Application.objects.filter(pk=moving.pk).update(status=status("PENDING_MIGRATION", "STARTING"))
    c = Client()
    c.force_login(staff)
    page = c.get(f"/clusters/{cluster.pk}/").content.decode()
    assert "Serve is moving replicas on its own" in page
    banner = page.split('id="serve-moving"')[1].split("</div>")[0]
    assert "team-a--moving/Hello: 1 PENDING_MIGRATION, 1 STARTING" in banner and "team-a--calm" not in banner
    member = Client()
    member.force_login(alice)
    assert 'id="serve-moving"' not in member.get(f"/clusters/{cluster.pk}/").content.decode()
    Application.objects.filter(pk=moving.pk).update(status=status("RUNNING"))
    assert "Serve is moving replicas on its own" not in c.get(f"/clusters/{cluster.pk}/").content.decode()


def test_an_idle_observation_rewrites_no_app_row_and_the_apps_still_read_as_just_observed(
    cluster, alice, team_a, grant, monkeypatch, api
):
    """A fleet of idle clusters is read every 20 s: a reading that changes nothing writes no app row and leaves the
    cluster's node list alone; the app's observed_at (API and page) is the cluster's last reading."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.deploys.observe import observe

    grant(team_a, cluster, "8")
    app, _ = observed(cluster, alice, team_a, monkeypatch)
    observe(cluster.pk)
    observe(cluster.pk)  # the first reading wrote the app's state and Ray's figure for it
    app.refresh_from_db()
    first = app.observed_at
    with CaptureQueriesContext(connection) as ctx:
        observe(cluster.pk)
    writes = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith(("UPDATE", "INSERT"))]
    assert not [w for w in writes if "applications_application" in w], writes
    cluster_writes = [w for w in writes if "clusters_cluster" in w]
    assert len(cluster_writes) == 1 and '"nodes"' not in cluster_writes[0] and '"last_seen_at"' in cluster_writes[0]
    seen = Cluster.objects.get(pk=cluster.pk).last_seen_at
    assert seen > first
    body = api(alice).get(f"/api/v1/applications/{app.pk}/").json()
    assert body["observed_at"].replace("Z", "+00:00") == seen.isoformat()
    listed = api(alice).get("/api/v1/applications/").json()["results"]
    assert [a["observed_at"] for a in listed if a["id"] == app.pk] == [body["observed_at"]]


def test_a_node_lists_its_first_twelve_replicas_and_counts_the_rest(cluster, alice, team_a, grant, staff):
    """A node of a 10,000-app cluster holds hundreds of replicas: its card names twelve and counts the others;
    its GPU figure counts them all."""
    grant(team_a, cluster, "8")
    spec = {"import_path": "examples.hello:app", "route_prefix": "/team-a/many", "deployments": [{"name": "Hello"}]}
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="many", spec=spec)
    reps = [{"replica_id": f"r{i:02d}", "node_id": "w" * 56, "state": "RUNNING"} for i in range(14)]
    status = {"status": "RUNNING", "deployments": {"Hello": {"required_resources": {"GPU": 0.25}, "replicas": reps}}}
    Application.objects.filter(pk=app.pk).update(status=status)
    Cluster.objects.filter(pk=cluster.pk).update(
        nodes=[{"node_id": "w" * 56, "node_ip": "10.0.0.9", "state": "ALIVE", "resources_total": {"GPU": 8.0}}]
    )
    c = Client()
    c.force_login(staff)
    page = c.get(f"/clusters/{cluster.pk}/").content.decode()
    card = page.split(f'data-node="{"w" * 56}"')[1].split('<div class="col">')[0]
    assert card.count("team-a--many/Hello") == 12 and "and 2 more replicas" in card
    assert "GPU 3.50 / 8.0" in card
