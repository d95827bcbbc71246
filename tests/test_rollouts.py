"""Canary rollouts without Ray (issue 27): the gates' arithmetic, what each phase places on Ray, the surge in quota
admission, refusals that name their field, and the engine's moves from what Ray reports and the step's metrics
(embedded store rows, as the scrape writes them). The real traffic split, rollout and rollback are proven on real Ray
in ``tests/e2e/test_rollouts_ray.py``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.alerts import services as alerts
from apps.alerts.models import Incident
from apps.applications.models import Application
from apps.applications.services import application_create, application_update
from apps.core.errors import Conflict
from apps.deploys.config import build_serve_config
from apps.metrics.models import Point, ScrapeRun, Series
from apps.metrics.services import series_key
from apps.quotas.services import team_pool_usage
from apps.rollouts import gates, services
from apps.rollouts.models import Rollout
from apps.rollouts.placement import routes, side_names
from tests.conftest import app_body

pytestmark = pytest.mark.django_db

SPEC = {k: v for k, v in app_body("team-a", 0, "web").items() if k not in ("team", "cluster", "name")}


def v(greeting: str, gpus: float = 0.5) -> dict:
    return {
        **SPEC,
        "import_path": "examples.hello:build",
        "args": {"greeting": greeting},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}],
    }


@pytest.fixture
def running_app(make_cluster, team_a, grant, alice):
    cluster = make_cluster(gpus="8")
    grant(team_a, cluster, "2")
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="web", spec=v("v1"))
    Application.objects.filter(pk=app.pk).update(deployed_revision=app.current_revision, state="running")
    app.refresh_from_db()
    return app


def start(app, alice, spec=None, **kw):
    return services.rollout_start(actor=alice, application=app, spec=spec or v("v2"), **kw)


# ---- the gates ---------------------------------------------------------------------------------------------------


def test_p95_interpolates_within_the_bucket_as_histogram_quantile_does():
    # 100 requests: 90 under 10 ms, 8 more under 50 ms, 2 more under 100 ms
    assert gates.p95({10.0: 90, 50.0: 98, 100.0: 100, float("inf"): 100}) == pytest.approx(10 + 40 * 5 / 8)
    assert gates.p95({10.0: 0, float("inf"): 0}) is None
    assert gates.p95({10.0: 50, float("inf"): 100}) == 10.0  # beyond the last bound: its lower edge


def test_the_verdict_waits_for_traffic_then_fails_on_errors_or_latency():
    g = services.clean_gates(None)
    stable = gates.Side(requests=1000, errors=5, p95_ms=20.0)
    assert gates.judge(None, g).verdict == "waiting"
    assert gates.judge({"stable": stable, "canary": gates.Side(10, 5, 20.0)}, g).verdict == "waiting"
    ok = gates.judge({"stable": stable, "canary": gates.Side(100, 1, 30.0)}, g)
    assert ok.verdict == "pass" and "1.0%" in ok.reason
    errs = gates.judge({"stable": stable, "canary": gates.Side(100, 20, 20.0)}, g)
    assert errs.verdict == "fail" and "20.0% of 100 requests" in errs.reason and "1.5%" in errs.reason
    slow = gates.judge({"stable": stable, "canary": gates.Side(100, 0, 95.0)}, g)
    assert slow.verdict == "fail" and "95 ms" in slow.reason and "70 ms" in slow.reason  # 20 + 50 ms of slack
    # with almost nothing through the old version (the last step), the new one is held to the gate alone
    alone = gates.judge({"stable": gates.Side(0, 0, None), "canary": gates.Side(100, 2, 500.0)}, g)
    assert alone.verdict == "fail" and "at most 1.0%" in alone.reason


# ---- what runs on Ray, phase by phase ----------------------------------------------------------------------------


def test_each_phase_places_the_app_the_new_version_and_the_splitter(running_app, alice):
    app = running_app
    rollout = start(app, alice)
    canary, split = side_names(app.serve_name)
    internal = routes(app.serve_name)

    def placed():
        cfg = build_serve_config(app.cluster).app_configs
        return {n: (c["route_prefix"], (c.get("args") or {}).get("greeting")) for n, c in cfg.items()}, cfg

    where, cfg = placed()  # start: the app keeps its route; the others wait at internal ones
    assert where == {
        app.serve_name: ("/team-a/web", "v1"),
        canary: (internal["canary"], "v2"),
        split: (internal["split"], None),
    }
    assert cfg[split]["deployments"][0]["user_config"] == {"weight": 0.0}
    assert cfg[split]["args"] == {**{k: internal[k] for k in ("stable", "canary")}, "proxy": "http://127.0.0.1:8000"}

    Rollout.objects.filter(pk=rollout.pk).update(phase="split", weight=20)
    where, cfg = placed()  # split: the splitter holds the route, the app moved to its internal one
    assert where[split] == ("/team-a/web", None) and where[app.serve_name] == (internal["stable"], "v1")
    assert cfg[split]["deployments"][0]["user_config"] == {"weight": 20.0}

    rollout.refresh_from_db()
    services._promote(rollout, timezone.now(), "test")
    where, cfg = placed()  # promote: everything to the new version while the app is redeployed with it
    assert where[app.serve_name] == (internal["stable"], "v2") and where[split] == ("/team-a/web", None)
    assert cfg[split]["deployments"][0]["user_config"] == {"weight": 100.0}

    Rollout.objects.filter(pk=rollout.pk).update(phase="restore")
    where, _ = placed()  # restore: the app has its route back; the others stay beside it a while
    assert where == {
        app.serve_name: ("/team-a/web", "v2"),
        canary: (internal["canary"], "v2"),
        split: (internal["split"], None),
    }
    Rollout.objects.filter(pk=rollout.pk).update(phase="done")
    assert set(build_serve_config(app.cluster).app_configs) == {app.serve_name}


# ---- admission and refusals ----------------------------------------------------------------------------------------


def test_the_surge_is_admitted_counted_and_released(running_app, alice, team_a):
    def used():
        return team_pool_usage(team=team_a, cluster=running_app.cluster)[0].in_use

    assert used() == Decimal("0.5")
    with pytest.raises(ValidationError) as refused:  # 0.5 + 1.5, and 1.5 + 1.5 while promoted: over the quota of 2
        start(running_app, alice, spec=v("v2", gpus=1.5))
    assert "quota" in refused.value.message_dict and not Rollout.objects.exists()
    rollout = start(running_app, alice, spec=v("v2", gpus=0.5))
    assert used() == Decimal("1.0")  # the new version beside the old
    with pytest.raises(ValidationError) as refused:  # the surge counts against the team's next write
        application_create(
            actor=alice,
            team=team_a,
            cluster=running_app.cluster,
            name="other",
            spec={**v("x", 1.5), "route_prefix": "/team-a/other"},
        )
    assert "quota" in refused.value.message_dict
    Rollout.objects.filter(pk=rollout.pk).update(phase="done")
    assert used() == Decimal("0.5")  # released when the rollout is done


def test_refusals_name_the_field_and_change_nothing(running_app, alice, make_cluster, team_a):
    app = running_app
    for kwargs, field in [
        ({"steps": [10, 5, 100]}, "steps.1"),
        ({"steps": [10, 50]}, "steps"),
        ({"steps": [0, 100]}, "steps.0"),
        ({"step_seconds": 5}, "step_seconds"),
        ({"gates": {"max_p95_ratio": 0.5}}, "gates.max_p95_ratio"),
        ({"gates": {"latency": 1}}, "gates.latency"),
        ({"spec": v("v1")}, "spec"),  # the version running
        ({"spec": {**v("v2"), "route_prefix": "/team-a/elsewhere"}}, "route_prefix"),
        ({"spec": None, "revision": 7}, "revision"),
    ]:
        with pytest.raises(ValidationError) as refused:
            services.rollout_start(actor=alice, application=app, **{"spec": v("v2"), **kwargs})
        assert field in refused.value.message_dict, (kwargs, refused.value.message_dict)
    assert not Rollout.objects.exists() and app.revisions.count() == 1
    Application.objects.filter(pk=app.pk).update(state="deploying")
    with pytest.raises(ValidationError, match="RUNNING"):
        start(app, alice)
    Application.objects.filter(pk=app.pk).update(state="running")
    start(app, alice)
    with pytest.raises(Conflict):
        start(app, alice, spec=v("v3"))
    with pytest.raises(Conflict):  # the app is not written around its rollout
        application_update(actor=alice, application=app, spec=v("v4"))


# ---- the engine ----------------------------------------------------------------------------------------------------


def metrics(cluster, app_name: str, ok: int, errors: int, fast: bool = True, at=None) -> None:
    """One scrape's worth of the proxy's counters for an application, as the embedded store keeps them (deltas)."""
    at = at or timezone.now()
    ScrapeRun.objects.create(cluster=cluster, started_at=at - timedelta(minutes=2), finished_at=at, samples=1)

    def point(name, labels, value):
        key = series_key(name, labels)
        s, _ = Series.objects.get_or_create(
            cluster=cluster, key=key, defaults={"name": name, "labels": labels, "kind": "counter"}
        )
        Point.objects.create(series=s, ts=at, value=value)

    point("ray_serve_num_http_requests", {"application": app_name, "status_code": "200"}, ok)
    point("ray_serve_num_http_requests", {"application": app_name, "status_code": "500"}, errors)
    total = ok + errors
    for le, share in (("10.0", 0.9 if fast else 0.0), ("100.0", 1.0), ("+Inf", 1.0)):
        point("ray_serve_http_request_latency_ms_bucket", {"application": app_name, "le": le}, total * share)


def ray(app, **status) -> dict:
    canary, split = side_names(app.serve_name)
    names = {"main": app.serve_name, "canary": canary, "split": split}
    return {names[k]: {"status": s, "route_prefix": "/team-a/web"} for k, s in status.items()}


def test_the_engine_steps_on_passing_gates_and_promotes(running_app, alice):
    app = running_app
    r = start(app, alice, steps=[10, 100], step_seconds=30)
    now = timezone.now()
    assert not services.tick(r, ray(app, main="RUNNING", canary="DEPLOYING", split="RUNNING"), now)
    assert services.tick(r, ray(app, main="RUNNING", canary="RUNNING", split="RUNNING"), now)
    r.refresh_from_db()
    assert (r.phase, r.step_index, r.weight) == ("split", 0, 10.0)
    canary, _ = side_names(app.serve_name)
    # no metrics yet: the step waits, whatever the time
    assert not services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), now + timedelta(seconds=40))
    r.refresh_from_db()
    assert r.verdicts[-1]["verdict"] == "waiting"
    metrics(app.cluster, app.serve_name, 900, 0, at=now + timedelta(seconds=20))
    metrics(app.cluster, canary, 100, 0, at=now + timedelta(seconds=20))
    # healthy but the step is young: judged, not advanced
    assert not services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), now + timedelta(seconds=25))
    r.refresh_from_db()
    assert (r.step_index, r.verdicts[-1]["verdict"]) == (0, "pass")
    assert services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), now + timedelta(seconds=31))
    r.refresh_from_db()
    assert (r.step_index, r.weight, len(r.verdicts)) == (1, 100.0, 2)
    step2 = now + timedelta(seconds=31)
    metrics(app.cluster, canary, 200, 0, at=step2 + timedelta(seconds=10))
    assert services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), step2 + timedelta(seconds=31))
    r.refresh_from_db()
    app.refresh_from_db()
    assert (r.phase, r.promoted, app.current_revision_id) == ("promote", True, r.to_revision_id)
    # promoted: the app is redeployed with the new version; once Ray runs it, the route goes back to it
    Application.objects.filter(pk=app.pk).update(deployed_revision=r.to_revision)
    assert services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), step2 + timedelta(seconds=40))
    r.refresh_from_db()
    assert (r.state, r.phase) == ("succeeded", "restore")
    later = r.phase_changed_at + timedelta(seconds=60)
    assert services.tick(r, ray(app, main="RUNNING"), later)
    r.refresh_from_db()
    assert r.phase == "done" and r.finished_at == later


def test_a_failing_gate_rolls_back_at_once_and_the_team_hears_it(running_app, alice):
    alerts.ensure_default_rules()
    app = running_app
    r = start(app, alice, steps=[10, 100], step_seconds=300)
    now = timezone.now()
    services.tick(r, ray(app, main="RUNNING", canary="RUNNING", split="RUNNING"), now)
    canary, _ = side_names(app.serve_name)
    metrics(app.cluster, app.serve_name, 900, 1, at=now + timedelta(seconds=10))
    metrics(app.cluster, canary, 80, 20, at=now + timedelta(seconds=10))
    # long before the step ends: a failure does not wait for it
    assert services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), now + timedelta(seconds=15))
    r.refresh_from_db()
    assert (r.state, r.phase, r.weight) == ("rolled_back", "restore", 0.0)
    assert "20.0% of 100" in r.reason and r.verdicts[-1]["verdict"] == "fail"
    app.refresh_from_db()
    assert app.current_revision_id == r.from_revision_id  # the running version stays the app's
    placed = build_serve_config(app.cluster).app_configs
    assert placed[app.serve_name]["route_prefix"] == "/team-a/web"  # the app has its route back in the same push
    alerts.evaluate()
    incident = Incident.objects.get(kind="rollout_rolled_back", state="open")
    assert incident.application_id == app.pk and incident.evidence["canary"]["errors"] == 20
    assert "rolled back to r1" in incident.summary


def test_a_new_version_that_fails_to_deploy_or_a_deadline_rolls_back(running_app, alice, team_a, make_cluster):
    app = running_app
    r = start(app, alice)
    assert services.tick(r, ray(app, main="RUNNING", canary="DEPLOY_FAILED", split="RUNNING"))
    r.refresh_from_db()
    assert r.state == "rolled_back" and "DEPLOY_FAILED" in r.reason
    Rollout.objects.filter(pk=r.pk).update(phase="done")
    r2 = start(app, alice, spec=v("v3"))
    assert services.tick(r2, ray(app, main="RUNNING"), r2.deadline_at + timedelta(seconds=1))
    r2.refresh_from_db()
    assert r2.state == "rolled_back" and "120 minutes" in r2.reason
    Rollout.objects.filter(pk=r2.pk).update(phase="done")
    r3 = start(app, alice, spec=v("v4"))  # a cluster that cannot import the splitter: said, and rolled back
    split = {
        **ray(app, main="RUNNING", canary="RUNNING"),
        side_names(app.serve_name)[1]: {
            "status": "DEPLOY_FAILED",
            "message": "Traceback...\nModuleNotFoundError: No module named 'workers'",
        },
    }
    assert services.tick(r3, split)
    r3.refresh_from_db()
    assert r3.state == "rolled_back" and "No module named 'workers'" in r3.reason and "ROLLOUT_SPLITTER" in r3.reason


def test_pause_resume_promote_and_abort_through_the_api(running_app, alice, bob, api):
    app = running_app
    client = api(alice)
    resp = client.post(f"/api/v1/applications/{app.pk}/rollouts/", {"spec": v("v2"), "steps": [50, 100]}, format="json")
    assert resp.status_code == 201, resp.content
    rid = resp.json()["id"]
    assert client.post(f"/api/v1/rollouts/{rid}/promote/").status_code == 409  # still starting
    r = Rollout.objects.get(pk=rid)
    services.tick(r, ray(app, main="RUNNING", canary="RUNNING", split="RUNNING"))
    paused = client.post(f"/api/v1/rollouts/{rid}/pause/")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert client.post(f"/api/v1/rollouts/{rid}/pause/").status_code == 409
    assert client.post(f"/api/v1/rollouts/{rid}/resume/").json()["state"] == "running"
    aborted = client.post(f"/api/v1/rollouts/{rid}/abort/").json()
    assert (aborted["state"], aborted["phase"], aborted["weight"]) == ("aborted", "restore", 0.0)
    listed = client.get(f"/api/v1/applications/{app.pk}/rollouts/").json()
    assert [x["id"] for x in listed["results"]] == [rid]
    assert api(bob).get(f"/api/v1/rollouts/{rid}/").status_code == 404  # another team's
    bad = client.post(f"/api/v1/applications/{app.pk}/rollouts/", {"spec": v("v3"), "colour": "blue"}, format="json")
    assert bad.status_code == 400 and "colour" in bad.json()
    from apps.audit.models import AuditEvent

    assert {"rollout.start", "rollout.pause", "rollout.resume", "rollout.abort"} <= set(
        AuditEvent.objects.values_list("action", flat=True)
    )


def test_the_rollout_page_shows_steps_weights_verdicts_and_one_chart_of_both_versions(running_app, alice, client):
    app = running_app
    r = start(app, alice, steps=[10, 50, 100], step_seconds=30)
    now = timezone.now()
    services.tick(r, ray(app, main="RUNNING", canary="RUNNING", split="RUNNING"), now)
    canary, _ = side_names(app.serve_name)
    metrics(app.cluster, app.serve_name, 900, 0, at=now + timedelta(seconds=10))
    metrics(app.cluster, canary, 100, 0, fast=False, at=now + timedelta(seconds=10))
    services.tick(r, ray(app, main="RUNNING", canary="RUNNING"), now + timedelta(seconds=31))
    client.force_login(alice)
    page = client.get(f"/rollouts/{r.pk}/").content.decode()
    assert "r1 → r2" in page and "step 2 of 3" in page
    assert 'class="weight-canary">50%' in page and 'class="weight-stable">50%' in page
    assert page.count('class="badge text-bg-success">pass') == 1 and "to come" in page
    assert "Abort and roll back" in page and "Promote now" in page
    chart = client.get(f"/rollouts/{r.pk}/status/").content.decode()
    assert '"y2unit": "ms"' in chart and "new version 5xx (%)" in chart and "running version p95 (ms)" in chart
    # the app page links the rollout under way; a viewer sees it without the buttons
    app_page = client.get(f"/apps/{app.pk}/").content.decode()
    assert f"/rollouts/{r.pk}/" in app_page and "50%</strong> of requests to the new version" in app_page
    assert client.post(f"/rollouts/{r.pk}/abort/").status_code == 302
    r.refresh_from_db()
    assert r.state == "aborted"


def test_a_tick_chain_runs_only_while_its_cluster_has_a_rollout(running_app, alice):
    """No beat entry: an idle installation runs no rollout task. A cluster with a rollout has one chain (a lease),
    which ends with the last rollout; a tick of a superseded chain does nothing."""
    from django.core.cache import cache

    from workers.tasks import rollouts as chain

    cluster_id = running_app.cluster_id
    key = chain._lease_key(cluster_id)
    cache.delete(key)
    assert chain.follow(cluster_id) is False and cache.get(key) is None  # nothing to follow
    r = start(running_app, alice)
    cache.delete(key)  # the start's own follow went to the broker; here the chain is started by hand
    assert chain.follow(cluster_id) is True
    token = cache.get(key)
    assert token and chain.follow(cluster_id) is False  # one chain per cluster
    assert chain.tick_cluster(cluster_id, "another-chain") == "superseded"
    assert chain.tick_cluster(cluster_id, token).startswith("unreachable")  # this cluster's Ray does not answer
    assert cache.get(key) == token  # still a rollout: the chain goes on
    Rollout.objects.filter(pk=r.pk).update(phase="done")
    chain.tick_cluster(cluster_id, token)
    assert cache.get(key) is None  # the last rollout done: the chain ends


def test_an_app_with_a_rollout_can_be_deleted_but_not_the_revisions_its_rollout_names(running_app, alice):
    from django.db.models import RestrictedError

    rollout = start(running_app, alice)
    with pytest.raises(RestrictedError):
        rollout.to_revision.delete()  # the rollout still names it
    Application.objects.filter(pk=running_app.pk).delete()  # the app goes with its revisions and rollouts
    assert not Rollout.objects.filter(pk=rollout.pk).exists()


def test_the_merged_config_reads_rollouts_only_when_one_is_under_way(running_app, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    cluster = running_app.cluster
    with CaptureQueriesContext(connection) as idle:
        build_serve_config(cluster)
    start(running_app, alice)
    with CaptureQueriesContext(connection) as rolling:
        names = [a["name"] for a in build_serve_config(cluster).config["applications"]]
    assert set(side_names(running_app.serve_name)) <= set(names)
    assert len(rolling) == len(idle) + 1


# ---- what the layers above make of a rolling app ------------------------------------------------------------------


def _counter(cluster, name: str, labels: dict, value: float, at) -> None:
    s, _ = Series.objects.get_or_create(
        cluster=cluster, key=series_key(name, labels), defaults={"name": name, "labels": labels, "kind": "counter"}
    )
    Point.objects.create(series=s, ts=at, value=value)


def test_the_alerts_count_a_rolling_apps_new_version_as_the_app(running_app, alice, team_a):
    """Idle GPUs: requests the new version answered are the app's (once: not again through the splitter). Cache
    thrash: the new version's cache is the same deployment's, counted under the app."""
    from apps.alerts.conditions.base import Rules
    from apps.alerts.conditions.usage import cache_thrash, idle_gpu
    from apps.alerts.models import AlertRule

    app, now = running_app, timezone.now()
    status = {
        "status": "RUNNING",
        "last_deployed_time_s": now.timestamp() - 7200,
        "deployments": {"Hello": {"required_resources": {"GPU": 0.5}, "replicas": [{"state": "RUNNING"}]}},
    }
    Application.objects.filter(pk=app.pk).update(status=status)
    start(app, alice)
    canary, split = side_names(app.serve_name)
    AlertRule.objects.create(kind="idle_gpu", team=team_a, params={"window_s": 600, "max_requests": 10})
    AlertRule.objects.create(kind="cache_thrash", team=team_a, params={"window_s": 600})
    ScrapeRun.objects.create(cluster=app.cluster, started_at=now - timedelta(minutes=11), finished_at=now, samples=1)
    ScrapeRun.objects.create(cluster=app.cluster, started_at=now - timedelta(minutes=1), finished_at=now, samples=1)
    http = "ray_serve_num_http_requests"
    _counter(app.cluster, http, {"application": app.serve_name, "status_code": "200"}, 2, now)
    _counter(app.cluster, http, {"application": split, "status_code": "200"}, 8, now)  # forwarded: not served
    rules = Rules(list(AlertRule.objects.all()))
    idle = [c for c in idle_gpu(rules, now) if c.application_id == app.pk]
    assert idle and idle[0].evidence["requests"] == 2  # the splitter's count is not the app's
    _counter(app.cluster, http, {"application": canary, "status_code": "200"}, 30, now)
    assert not [c for c in idle_gpu(rules, now) if c.application_id == app.pk]  # the new version served them

    mux_requests, mux_loads = (
        "ray_serve_multiplexed_get_model_requests_counter",
        "ray_serve_multiplexed_models_load_counter",
    )
    for side, requests, loads in ((app.serve_name, 100, 5), (canary, 100, 115)):  # alone, the app's cache is fine
        _counter(app.cluster, mux_requests, {"deployment": "Hello", "application": side}, requests, now)
        _counter(app.cluster, mux_loads, {"deployment": "Hello", "application": side}, loads, now)
    thrash = [c for c in cache_thrash(rules, now) if c.application_id == app.pk]
    assert len(thrash) == 1  # one condition for the app's deployment, both versions' counters in it
    assert thrash[0].evidence["requests"] == 200 and thrash[0].evidence["loads"] == 120


def test_compaction_waits_for_a_rollout_to_end(running_app, alice, staff):
    from apps.compaction import policy
    from apps.compaction.models import CompactionPlan
    from apps.compaction.services import plan_create, plan_execute
    from apps.deploys.models import PushState

    cluster = running_app.cluster
    plan = CompactionPlan.objects.create(cluster=cluster, input={}, nodes_to_drain=["n1"], state="planned")
    cluster.compaction_settings.compaction_policy = "automatic"
    cluster.compaction_settings.save()
    start(running_app, alice)
    cluster.refresh_from_db()
    PushState.objects.filter(pk=cluster.pk).update(pushed_generation=cluster.desired_generation)  # pushed
    assert policy.policy_tick(cluster.pk) == "rollout in progress"
    with pytest.raises(ValidationError) as refused:
        plan_create(actor=staff, cluster=cluster)
    assert "team-a/web" in str(refused.value) and "rollout" in str(refused.value)
    with pytest.raises(ValidationError):
        plan_execute(actor=staff, plan=plan)
    plan.refresh_from_db()
    assert plan.state == "planned"  # nothing changed
