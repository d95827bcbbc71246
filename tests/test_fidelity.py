"""Real-world fidelity at the client seam (a fake dashboard that echoes configs as Ray 2.60 does): integer
resources settle, background work is bounded, counts are exact, a registered cluster keeps what it runs.

The same behaviours are proven against a real Ray cluster in tests/e2e/test_fidelity_ray.py.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.models import PushState
from apps.deploys.observe import observe_cluster
from apps.deploys.push import push_cluster
from apps.deploys.reconcile import reconcile_cluster
from apps.metrics import services as metrics
from apps.metrics.models import MetricsConfig, Point, Series
from tests.conftest import app_body
from tests.fake_ray import FakeRay
from workers.clients import prometheus
from workers.tasks import sync as tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_ray():
    ray = FakeRay().start()
    yield ray
    ray.stop()


@pytest.fixture
def on_fake(make_cluster, fake_ray, team_a, grant):
    cluster = make_cluster(name="fake", dashboard_url=fake_ray.url, gpus="12")
    grant(team_a, cluster, "8")
    return cluster


@pytest.fixture
def no_tasks(monkeypatch):
    """Record what would be enqueued instead of enqueuing it."""
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.poll_status, "apply_async", lambda args, countdown=0: sent.append((args, countdown)))
    monkeypatch.setattr(tasks.sync_cluster, "delay", lambda *a: sent.append(("sync", a)))
    return sent


def test_integer_resources_reach_running_and_are_not_drift(on_fake, api, alice, fake_ray, no_tasks):
    body = app_body(
        "team-a",
        on_fake.pk,
        "ints",
        deployments=[{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 1, "num_gpus": 1}}],
    )
    app_id = api(alice).post("/api/v1/applications/", body, format="json").json()["id"]
    assert push_cluster(on_fake.pk).outcome == "pushed"
    echoed = fake_ray.status()["applications"]["team-a--ints"]["deployed_app_config"]
    assert echoed["deployments"][0]["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}  # as Ray echoes it
    observe_cluster(on_fake.pk)
    assert observe_cluster(on_fake.pk) is True
    app = Application.objects.get(pk=app_id)
    assert app.state == "running" and app.config_diff == []
    runs = SyncRun.objects.count()
    for _ in range(3):  # three reconcile intervals
        assert reconcile_cluster(on_fake.pk) == "in-sync"
    assert SyncRun.objects.count() == runs and Cluster.objects.get(pk=on_fake.pk).drift == []


def test_a_real_difference_is_shown_field_by_field_and_repaired_a_bounded_number_of_times(
    on_fake, api, alice, fake_ray, no_tasks, monkeypatch
):
    api(alice).post("/api/v1/applications/", app_body("team-a", on_fake.pk, "web"), format="json")
    push_cluster(on_fake.pk)
    observe_cluster(on_fake.pk)
    # Someone scales the app behind the control plane's back.
    with fake_ray.lock:
        cfg = fake_ray.apps["team-a--web"]["deployed_app_config"]
        cfg["deployments"][0]["num_replicas"] = 5
    observe_cluster(on_fake.pk)
    app = Application.objects.get(name="web")
    assert app.config_diff == [{"field": "deployments[Hello].num_replicas", "desired": 1, "observed": 5}]
    drift = Cluster.objects.get(pk=on_fake.pk).drift
    assert drift[0]["kind"] == "changed" and drift[0]["diff"][0]["observed"] == 5
    # A cluster that rewrites the config on every push: repaired three times, then only flagged.
    real_put = fake_ray.put

    def stubborn(config: dict) -> str | None:
        error = real_put(config)
        with fake_ray.lock:
            fake_ray.apps["team-a--web"]["deployed_app_config"]["deployments"][0]["num_replicas"] = 5
        return error

    monkeypatch.setattr(fake_ray, "put", stubborn)
    outcomes = [reconcile_cluster(on_fake.pk) for _ in range(6)]
    assert outcomes.count("repaired") == 3 and outcomes[-1] == "drift-not-repairable"


# ---- bounded background work ---------------------------------------------------------------------------------


def test_one_status_poller_per_cluster_however_many_pushes(on_fake, no_tasks):
    assert tasks.follow_status(on_fake.pk) is True
    assert tasks.follow_status(on_fake.pk) is False  # a second push: the running poller follows it
    assert tasks.follow_status(on_fake.pk) is False
    assert len(no_tasks) == 1
    assert PushState.objects.get(pk=on_fake.pk).poll_requests == 3


def test_the_poller_stops_when_settled_and_follows_a_push_that_arrives_meanwhile(on_fake, no_tasks, monkeypatch):
    settled = {"value": False}
    monkeypatch.setattr("apps.deploys.observe.observe_cluster", lambda cid: settled["value"])
    tasks.follow_status(on_fake.pk)
    (cid, token, n, seen), _ = no_tasks.pop()
    assert tasks.poll_status(cid, token, n, seen) == "polling"
    (cid, token, n, seen), _ = no_tasks.pop()
    settled["value"] = True
    tasks.follow_status(on_fake.pk)  # a push while the poller runs: no second poller...
    assert not no_tasks
    assert tasks.poll_status(cid, token, n, seen) == "polling"  # ...and this one does not stop before following it
    (cid, token, n, seen), _ = no_tasks.pop()
    assert tasks.poll_status(cid, token, n, seen) == "settled"
    assert not no_tasks and tasks.follow_status(on_fake.pk) is True  # the lease was let go


def test_a_cluster_that_never_settles_is_polled_with_backoff_then_left_to_the_reconcile(on_fake, no_tasks, monkeypatch):
    monkeypatch.setattr("apps.deploys.observe.observe_cluster", lambda cid: False)
    tasks.follow_status(on_fake.pk)
    polls, waited = 0, 0.0
    while no_tasks:
        (cid, token, n, seen), countdown = no_tasks.pop()
        waited += countdown
        polls += 1
        outcome = tasks.poll_status(cid, token, n, seen)
    assert outcome == "gave-up"
    assert polls == tasks.STATUS_POLL_MAX + 1
    assert 10 * 60 < waited < 20 * 60  # about a quarter of an hour, 61 polls: not 180 polls every second


# ---- scrapes ------------------------------------------------------------------------------------------------

MUX = 'application="t--mux",deployment="Mux",replica="r1"'


def page(requests: float | None, loads: float | None) -> str:
    lines = ["# TYPE ray_resources gauge", 'ray_resources{Name="GPU",State="USED",NodeAddress="10.0.0.2"} 1']
    if requests is not None:
        lines += [
            "# TYPE ray_serve_multiplexed_get_model_requests_counter_total counter",
            f"ray_serve_multiplexed_get_model_requests_counter_total{{{MUX}}} {requests}",
            "# TYPE ray_serve_multiplexed_models_load_counter_total counter",
            f"ray_serve_multiplexed_models_load_counter_total{{{MUX}}} {loads}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def pages(monkeypatch):
    served: dict[str, str] = {}
    delay = {"s": 0.0}

    def fetch(target: str, timeout: float = 5, gzip: bool = True) -> str:
        time.sleep(delay["s"])
        if target not in served:
            raise prometheus.ScrapeError(f"{target}: refused")
        return served[target]

    monkeypatch.setattr(prometheus, "fetch", fetch)
    served["_delay"] = delay
    return served


def stored(name: str) -> float:
    series = Series.objects.filter(name=name).first()
    return sum(series.points.values_list("value", flat=True)) if series else 0.0


def test_counters_first_seen_after_a_completed_scrape_count_from_zero(cluster, pages):
    t0 = timezone.now() - timedelta(minutes=5)
    pages["node"] = page(None, None)  # the node's endpoint before the multiplexed app exists
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0)
    pages["node"] = page(9, 7)  # a burst right after RUNNING, before any scrape saw the app
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0 + timedelta(seconds=15))
    assert stored("ray_serve_multiplexed_get_model_requests_counter") == 9
    assert stored("ray_serve_multiplexed_models_load_counter") == 7


def test_counters_on_a_target_never_read_before_are_history(cluster, pages):
    pages["node"] = page(9, 7)
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=timezone.now())
    assert not Point.objects.filter(series__kind="counter").exists()


def test_one_scrape_per_cluster_and_overlapping_scrapes_never_double_count(cluster, pages, monkeypatch):
    t0 = timezone.now() - timedelta(minutes=5)
    pages["node"] = page(0, 0)
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0)
    pages["node"] = page(9, 7)
    overlapping: list = []
    real = metrics._team_allocation

    def another_scrape_starts_meanwhile(c):
        # The beat's next scrape arrives while this one is still at work (as when a worker is busy).
        overlapping.append(metrics.scrape_cluster(cluster.pk, targets=["node"]))
        return real(c)

    monkeypatch.setattr(metrics, "_team_allocation", another_scrape_starts_meanwhile)
    first = metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0 + timedelta(seconds=15))
    assert first is not None and overlapping == [None]  # the second found the lease taken
    monkeypatch.setattr(metrics, "_team_allocation", real)
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0 + timedelta(seconds=30))  # nothing new
    assert stored("ray_serve_multiplexed_get_model_requests_counter") == 9
    assert stored("ray_serve_multiplexed_models_load_counter") == 7


def test_a_failed_target_is_counted_once_when_it_answers_again(cluster, pages):
    t0 = timezone.now() - timedelta(minutes=5)
    pages["node"] = page(2, 1)
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0)
    del pages["node"]
    run = metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0 + timedelta(seconds=15))
    assert run.targets_failed == 1
    pages["node"] = page(10, 4)
    metrics.scrape_cluster(cluster.pk, targets=["node"], now=t0 + timedelta(seconds=30))
    assert stored("ray_serve_multiplexed_get_model_requests_counter") == 8


def test_targets_are_fetched_concurrently_under_one_deadline(cluster, pages, settings):
    settings.SCRAPE_DEADLINE_S = 2
    for i in range(8):
        pages[f"n{i}"] = page(None, None)
    pages["_delay"]["s"] = 1.0
    started = time.monotonic()
    run = metrics.scrape_cluster(cluster.pk, targets=[f"n{i}" for i in range(8)])
    assert run.targets_failed == 0 and time.monotonic() - started < 3  # one after another: 8 s
    pages["_delay"]["s"] = 3.0
    started = time.monotonic()
    run = metrics.scrape_cluster(cluster.pk, targets=["n0", "n1"])
    assert run.targets_failed == 2 and "within 2 s" in run.errors[0] and time.monotonic() - started < 2.9


def test_a_scrape_that_outlived_its_lease_stores_nothing(cluster, pages, monkeypatch):
    pages["node"] = page(1, 1)
    real = metrics._team_allocation

    def steal(c):
        MetricsConfig.objects.filter(pk=c.pk).update(scrape_owner="someone-else")
        return real(c)

    monkeypatch.setattr(metrics, "_team_allocation", steal)
    run = metrics.scrape_cluster(cluster.pk, targets=["node"])
    assert "outlived its lease" in run.errors[-1] and not Series.objects.exists()


# ---- a cluster that already runs apps ------------------------------------------------------------------------

PRE = {
    "applications": [
        {"name": "legacy-a", "route_prefix": "/legacy-a", "import_path": "examples.hello:app"},
        {
            "name": "legacy_b",
            "route_prefix": "/legacy-b",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_gpus": 1}}],
        },
    ]
}


@pytest.fixture
def busy_cluster(fake_ray, make_cluster, team_a, grant, no_tasks):
    fake_ray.put(PRE)
    fake_ray.add_imperative("notebook")
    cluster = make_cluster(name="busy", dashboard_url=fake_ray.url, gpus="12", inventoried=False)
    grant(team_a, cluster, "4")
    return cluster


def test_registering_a_cluster_keeps_what_runs_on_it(busy_cluster, fake_ray, api, alice, staff):
    api(alice).post("/api/v1/applications/", app_body("team-a", busy_cluster.pk, "new"), format="json")
    assert push_cluster(busy_cluster.pk).outcome == "pushed"
    sent = {a["name"] for a in fake_ray.puts[-1]["applications"]}
    assert sent == {"legacy-a", "legacy_b", "team-a--new"}
    assert {"legacy-a", "legacy_b", "notebook"} <= set(fake_ray.apps)
    assert fake_ray.apps["legacy_b"]["deployed_app_config"]["deployments"][0]["num_replicas"] == 2
    event = AuditEvent.objects.get(action="cluster.inventory")
    assert event.after["preexisting_apps"] == ["legacy-a", "legacy_b", "notebook"]
    listed = {u["name"]: u for u in api(staff).get(f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/").json()}
    assert listed["legacy-a"]["kind"] == "preexisting" and listed["legacy-a"]["carried"]
    assert listed["notebook"]["kind"] == "imperative" and not listed["notebook"]["can_remove"]
    assert api(alice).get(f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/").status_code == 403


def test_nothing_is_pushed_before_the_inventory_can_be_read(make_cluster, team_a, grant, api, alice):
    cluster = make_cluster(name="dark", dashboard_url="http://127.0.0.1:1", inventoried=False)
    grant(team_a, cluster, "4")
    api(alice).post("/api/v1/applications/", app_body("team-a", cluster.pk, "x"), format="json")
    from workers.clients.ray_dashboard import RayUnavailable

    with pytest.raises(RayUnavailable):
        push_cluster(cluster.pk)
    run = SyncRun.objects.get(cluster=cluster)
    assert run.state == "failed" and "could not be read first" in run.error
    assert Cluster.objects.get(pk=cluster.pk).inventory_taken_at is None


def test_adopting_keeps_the_serve_name_and_changes_nothing_on_the_cluster(busy_cluster, fake_ray, api, staff):
    push_cluster(busy_cluster.pk)
    before = fake_ray.apps["legacy_b"]["last_deployed_time_s"]
    resp = api(staff).post(
        f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/legacy_b/adopt/", {"team": "team-a"}, format="json"
    )
    assert resp.status_code == 201, resp.content
    app = resp.json()
    assert app["name"] == "legacy_b" and app["serve_name"] == "legacy_b" and app["revision"] == 1
    assert app["deployments"][0]["num_replicas"] == 2
    assert push_cluster(busy_cluster.pk).outcome == "pushed"
    assert fake_ray.apps["legacy_b"]["last_deployed_time_s"] == before  # the same config: Ray redeployed nothing
    assert "legacy_b" not in Cluster.objects.get(pk=busy_cluster.pk).preexisting_apps
    assert AuditEvent.objects.filter(action="application.adopt", team__slug="team-a").exists()


def test_adoption_is_admitted_against_the_quota(busy_cluster, api, staff, team_b, grant):
    observe_cluster(busy_cluster.pk)  # registration's first observation records the inventory
    grant(team_b, busy_cluster, "1")
    resp = api(staff).post(
        f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/legacy_b/adopt/", {"team": "team-b"}, format="json"
    )
    assert resp.status_code == 400 and "needs 2 GPU" in resp.json()["quota"][0]
    assert not Application.objects.exists()
    assert "legacy_b" in Cluster.objects.get(pk=busy_cluster.pk).preexisting_apps


def test_removing_a_preexisting_app_is_a_staff_action_that_is_audited(busy_cluster, fake_ray, api, staff, alice):
    push_cluster(busy_cluster.pk)
    url = f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/legacy-a/"
    assert api(alice).delete(url).status_code == 403
    assert api(staff).delete(url).status_code == 204
    assert push_cluster(busy_cluster.pk, force=True).outcome == "pushed"
    assert "legacy-a" not in fake_ray.apps and "legacy_b" in fake_ray.apps
    assert AuditEvent.objects.filter(action="cluster.unmanaged_app_remove", before__app="legacy-a").exists()
    resp = api(staff).delete(f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/notebook/")
    assert resp.status_code == 409 and "serve.run" in resp.json()["detail"]
    assert api(staff).delete(f"/api/v1/clusters/{busy_cluster.pk}/unmanaged-apps/nope/").status_code == 404


def test_a_team_cannot_take_a_route_or_name_that_a_preexisting_app_holds(busy_cluster, api, alice):
    push_cluster(busy_cluster.pk)
    resp = api(alice).post(
        "/api/v1/applications/", app_body("team-a", busy_cluster.pk, "x", route_prefix="/legacy-a"), format="json"
    )
    assert resp.status_code == 400 and "before it was registered" in resp.json()["route_prefix"][0]


def test_apps_that_appear_later_stay_under_the_drift_policy(busy_cluster, fake_ray, no_tasks):
    push_cluster(busy_cluster.pk)
    observe_cluster(busy_cluster.pk)
    fake_ray.put({"applications": [*fake_ray.puts[-1]["applications"], {"name": "rogue", "import_path": "a.b:c"}]})
    assert reconcile_cluster(busy_cluster.pk) == "repaired"
    assert "rogue" not in fake_ray.apps and "legacy-a" in fake_ray.apps


def test_a_write_that_lands_during_the_put_and_changes_nothing_still_gets_the_push_followed(
    on_fake, api, alice, fake_ray, no_tasks, monkeypatch
):
    """Seen in CI: a model added to the catalog while the first PUT was on its way was already in it, so the second
    round found nothing new ("skipped"), and the task, reading only the last round, never started the status
    poller: the app stayed "deploying" until beat's next reconcile."""
    from django.db.models import F

    from apps.deploys import push

    real = push.transport_for

    class Racing:
        def __init__(self, cluster):
            self.inner, self.cluster = real(cluster), cluster

        def put_config(self, config):
            self.inner.put_config(config)
            if len(fake_ray.puts) == 1:  # the write arrives while the first PUT is in flight
                Cluster.objects.filter(pk=self.cluster.pk).update(desired_generation=F("desired_generation") + 1)

    monkeypatch.setattr(push, "transport_for", Racing)
    api(alice).post("/api/v1/applications/", app_body("team-a", on_fake.pk, "web"), format="json")
    no_tasks.clear()
    assert tasks.sync_cluster(on_fake.pk) == "skipped"  # the last round's outcome
    assert len(fake_ray.puts) == 1
    assert [args for args, _ in no_tasks if args != "sync"], "the status poller was started"
