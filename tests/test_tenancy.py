"""Issue 22's proven cases, each as the review made it: what one team read of another's through shared objects, and
what a token or a role granted itself. Every test here failed before the fix it names.

The world (tests/support/world.py): team A's people attack; team B's secrets sit everywhere a team's data can show.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import F
from django.test import Client
from rest_framework.test import APIClient

from apps.alerts import services as alert_services
from apps.alerts.models import Incident, IncidentAck
from apps.alerts.selectors import open_count
from apps.metrics.models import Point, Series
from apps.teams.models import ApiToken, Membership, Role, Team
from apps.teams.principal import Principal
from apps.teams.services import issue_token
from tests.support import world as w

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return w.build()


def api_as(user: Any, *, team: Team | None = None, role: str = "") -> APIClient:
    client = APIClient()
    _, secret = issue_token(user=user, name="t", team=team, role=role)
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def page_as(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def leaks(body: bytes | str) -> list[str]:
    text = body.decode() if isinstance(body, bytes) else body
    return [m for m in w.B_MARKERS if m in text]


# ---- what one team read of another's ------------------------------------------------------------------------------


def test_the_cluster_object_shows_a_team_its_own_drift_with_values_and_nothing_of_others(world):
    member = api_as(world.users["member"])
    data = member.get(f"/api/v1/clusters/{world.cluster.pk}/").json()
    assert leaks(json.dumps(data)) == []
    assert [d["app"] for d in data["drift"]] == [world.apps["a"].serve_name]
    assert data["drift"][0]["diff"][0]["observed"] == "A-NEW-VALUE"  # its own app's values: it is theirs
    assert data["unmanaged_apps"] == [] and data["dashboard_url"] == ""
    assert "10.9.9.9" not in json.dumps(data)  # Ray's endpoints and its raw messages are staff's
    staff = api_as(world.users["staff"]).get(f"/api/v1/clusters/{world.cluster.pk}/").json()
    assert len(staff["drift"]) == 3 and staff["unmanaged_apps"][0]["config"]["runtime_env"]["env_vars"]


def test_the_cluster_page_and_list_show_no_other_teams_drift_or_unmanaged_configs(world):
    for path in (f"/clusters/{world.cluster.pk}/", "/clusters/"):
        body = page_as(world.users["member"]).get(path).content
        assert leaks(body) == [], path
    body = page_as(world.users["staff"]).get(f"/clusters/{world.cluster.pk}/").content.decode()
    assert w.B_SECRET_NEW in body and w.UNMANAGED_APP in body


def test_cluster_state_shows_other_teams_replicas_as_resources_only(world):
    state = api_as(world.users["viewer"]).get(f"/api/v1/clusters/{world.cluster.pk}/state/").json()
    assert leaks(json.dumps(state)) == [] and "team-b" not in json.dumps(state)
    replicas = [r for n in state["nodes"] for r in n["replicas"]]
    others = [r for r in replicas if r.get("other_team")]
    assert len(others) == 1 and set(others[0]) == {"other_team", "state", "resources"}
    assert others[0]["resources"]["GPU"] == "0.5"
    assert any(r.get("app") == world.apps["a"].serve_name for r in replicas)


def test_shared_incidents_give_each_team_its_own_evidence_and_deliveries(world):
    member = api_as(world.users["member"])
    listed = member.get("/api/v1/incidents/?state=open").json()["results"]
    assert leaks(json.dumps(listed)) == []
    shared = next(i for i in listed if i["id"] == world.objects["shared_incident"].pk)
    assert [d["app"] for d in shared["evidence"]["drift"]] == [world.apps["a"].serve_name]
    pushed = next(i for i in listed if i["id"] == world.objects["push_incident"].pk)
    assert "yours were not" in pushed["evidence"]["error"]
    for path in (f"/incidents/{world.objects['shared_incident'].pk}/", "/incidents/"):
        body = page_as(world.users["member"]).get(path).content.decode()
        assert leaks(body) == [], path
        assert "A-HOOK" not in body and w.A_EMAILS[0] not in body  # a member: not even its own team's addresses
    admin_page = page_as(world.users["admin"]).get(f"/incidents/{world.objects['shared_incident'].pk}/")
    assert "A-HOOK" in admin_page.content.decode() and leaks(admin_page.content) == []


def test_acknowledging_a_shared_incident_silences_it_for_ones_own_team_only(world):
    shared = world.objects["shared_incident"]
    bob = Principal(user=world.users["b_owner"])
    before = open_count(bob)
    resp = api_as(world.users["member"]).post(f"/api/v1/incidents/{shared.pk}/acknowledge/")
    assert resp.status_code == 200 and resp.json()["acknowledged"]
    shared.refresh_from_db()
    assert shared.acknowledged_at is None  # not for everyone
    assert list(IncidentAck.objects.values_list("team__slug", flat=True)) == ["team-a"]
    assert open_count(bob) == before  # team B is still alerted
    assert api_as(world.users["b_owner"]).get(f"/api/v1/incidents/{shared.pk}/").json()["acknowledged"] is False
    assert api_as(world.users["viewer"]).post(f"/api/v1/incidents/{shared.pk}/acknowledge/").status_code == 403
    api_as(world.users["staff"]).post(f"/api/v1/incidents/{shared.pk}/acknowledge/")
    shared.refresh_from_db()
    assert shared.acknowledged_at is not None  # staff: for all


def test_notifications_of_a_shared_incident_are_per_team(world, mailoutbox, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    shared = world.objects["shared_incident"]
    shared.deliveries.all().delete()
    alert_services.notify_incident(shared, "open")
    deliveries = list(shared.deliveries.select_related("team", "endpoint"))
    mails = [d for d in deliveries if d.channel == "email"]
    assert {d.team.slug for d in mails if d.team} == {"team-a", "team-b"}
    for d in mails:
        if d.team and d.team.slug == "team-a":
            assert w.B_OWNER_EMAIL not in d.recipients  # one mail per team: no team reads another's addresses
    hook_a = next(d for d in deliveries if d.channel == "webhook" and d.team.slug == "team-a")
    body = alert_services.payload(shared, "open", "json", hook_a.team_id)
    assert leaks(json.dumps(body)) == [] and world.apps["a"].serve_name in body["summary"]
    for d in mails:
        alert_services._send_email(d)
    to_a = next(m for m in mailoutbox if w.A_EMAILS[0] in m.to)
    assert leaks(to_a.subject + to_a.body) == [] and w.B_OWNER_EMAIL not in to_a.to


def test_metrics_by_cluster_are_the_teams_own_series(world):
    member = api_as(world.users["member"])
    data = member.get(f"/api/v1/metrics/?series=requests&cluster={world.cluster.pk}").json()
    assert [s["labels"]["application"] for s in data["series"]] == [world.apps["a"].serve_name]
    teams = member.get(f"/api/v1/metrics/?series=team_gpus_allocated&cluster={world.cluster.pk}&team=team-a").json()
    assert {s["labels"]["team"] for s in teams["series"]} == {"team-a"}
    chart = page_as(world.users["member"]).get(f"/charts/?series=requests&cluster={world.cluster.pk}").content
    assert leaks(chart) == [] and world.apps["a"].serve_name.encode() in chart
    staff = api_as(world.users["staff"]).get(f"/api/v1/metrics/?series=requests&cluster={world.cluster.pk}").json()
    assert len(staff["series"]) == 2


def test_a_team_recreated_under_a_deleted_teams_slug_reads_nothing_of_its_series(world, make_user):
    """Team B's series stay in the store after it is gone; a new team-b (same slug, same app name) starts empty."""
    from apps.applications.models import Application
    from apps.applications.services import application_create
    from apps.teams.services import team_create

    old = world.apps["b"]
    old_name = old.serve_name
    Application.objects.filter(pk=old.pk).delete()
    # The namesake's last point more than a chart step before the newcomer is born (a bucket that holds the birth
    # is shown: see visibility.since).
    Point.objects.filter(series__labels__application=old_name).update(ts=F("ts") - timedelta(minutes=5))
    Point.objects.filter(series__labels__team="team-b").update(ts=F("ts") - timedelta(minutes=5))
    world.teams["b"].delete()
    assert Series.objects.filter(labels__application=old_name).exists()  # still stored
    newcomer = make_user("newcomer")
    team = team_create(actor=newcomer, slug="team-b", name="New B")
    from apps.quotas.services import quota_set

    quota_set(actor=world.users["staff"], team=team, cluster=world.cluster, pool_name="a100", gpus=1)
    app = application_create(
        actor=newcomer, team=team, cluster=world.cluster, name=w.B_APP, spec=w._spec(w.B_APP, "x", "/team-b/new")
    )
    assert app.serve_name == old_name
    client = api_as(newcomer)
    by_app = client.get(f"/api/v1/metrics/?series=requests&application={app.pk}").json()
    by_cluster = client.get(f"/api/v1/metrics/?series=requests&cluster={world.cluster.pk}").json()
    team_series = client.get(f"/api/v1/metrics/?series=team_gpus_allocated&cluster={world.cluster.pk}&team=team-b")
    for data in (by_app, by_cluster, team_series.json()):
        assert all(s["points"] == [] for s in data["series"]), data
    assert Point.objects.filter(series__labels__application=old_name).count() == 7  # not erased: hidden


def test_sync_run_errors_show_a_team_its_own_apps_part_only(world):
    run = world.objects["sync_run"]
    member = api_as(world.users["member"])
    listed = member.get(f"/api/v1/sync-runs/?cluster={world.cluster.pk}").json()["results"]
    one = member.get(f"/api/v1/sync-runs/{run.pk}/").json()
    for data in (listed, one):
        assert leaks(json.dumps(data)) == []
    assert "yours were not" in one["error"] and "config_snapshot" not in one
    bob = api_as(world.users["b_owner"]).get(f"/api/v1/sync-runs/{run.pk}/").json()
    assert w.B_MODULE in bob["error"]  # the team at fault reads Ray's reason
    assert leaks(page_as(world.users["member"]).get(f"/apps/{world.apps['a'].pk}/").content) == []


def test_a_member_sees_no_webhook_urls_and_a_viewer_no_members_addresses(world):
    page = page_as(world.users["member"]).get("/teams/team-a/webhooks/").content.decode()
    assert "A-HOOK" not in page and "admins manage its webhooks" in page
    assert "A-HOOK" in page_as(world.users["admin"]).get("/teams/team-a/webhooks/").content.decode()
    viewer = api_as(world.users["viewer"])
    members = viewer.get("/api/v1/teams/team-a/members/").json()["results"]
    assert members and all("email" not in m for m in members)
    body = page_as(world.users["viewer"]).get("/teams/team-a/members/").content.decode()
    assert not [e for e in w.A_EMAILS if e in body]
    admin = api_as(world.users["admin"]).get("/api/v1/teams/team-a/members/").json()["results"]
    assert {m["email"] for m in admin} >= set(w.A_EMAILS)


def test_an_alert_rule_on_another_teams_app_is_no_such_app(world):
    resp = api_as(world.users["admin"]).post(
        "/api/v1/alert-rules/", {"kind": "idle_gpu", "application": world.apps["b"].pk}, format="json"
    )
    assert resp.status_code == 400 and resp.json() == {"application": ["No such application among your teams'."]}
    assert "team-b" not in resp.content.decode()


# ---- what a token or a role granted itself ------------------------------------------------------------------------


def test_a_viewer_scoped_token_cannot_mint_manage_tokens_or_read_the_audit_log(world):
    owner = world.users["owner"]
    scoped = api_as(owner, team=world.teams["a"], role=Role.VIEWER)
    personal = issue_token(user=owner, name="laptop")[0]
    assert scoped.post("/api/v1/tokens/", {"name": "escalate"}, format="json").status_code == 403
    made = scoped.post("/api/v1/tokens/", {"name": "x", "team": "team-a", "role": "viewer"}, format="json")
    assert made.status_code == 403
    listed = scoped.get("/api/v1/tokens/").json()["results"]
    assert [t["name"] for t in listed] == ["t"]  # only itself
    assert scoped.delete(f"/api/v1/tokens/{personal.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=personal.pk).revoked_at is None
    assert scoped.get("/api/v1/audit-events/").json()["results"] == []
    assert scoped.post("/api/v1/applications/", {"team": "team-a"}, format="json").status_code in (400, 403)
    assert api_as(owner).get("/api/v1/audit-events/").json()["results"]  # the owner's own session/token reads it


def test_an_admin_scoped_token_mints_only_within_its_scope(world):
    admin_token = api_as(world.users["admin"], team=world.teams["a"], role=Role.ADMIN)
    ok = admin_token.post("/api/v1/tokens/", {"name": "ci", "team": "team-a", "role": "member"}, format="json")
    assert ok.status_code == 201 and ok.json()["team"] == "team-a"
    too_high = admin_token.post("/api/v1/tokens/", {"name": "ci", "team": "team-a", "role": "owner"}, format="json")
    assert too_high.status_code == 400
    assert admin_token.post("/api/v1/tokens/", {"name": "me"}, format="json").status_code == 403


def test_a_staff_users_scoped_token_is_not_staff(world):
    scoped = api_as(world.users["staff"], team=world.teams["a"], role=Role.MEMBER)
    quota = scoped.post(
        "/api/v1/quotas/", {"team": "team-b", "cluster": world.cluster.pk, "pool": "a100", "gpus": "8"}, format="json"
    )
    assert quota.status_code == 403
    assert (
        scoped.patch(f"/api/v1/clusters/{world.cluster.pk}/", {"drift_policy": "flag"}, format="json").status_code
        == 403
    )
    assert scoped.get(f"/api/v1/clusters/{world.cluster.pk}/serve-config/").status_code == 403
    assert scoped.get("/api/v1/teams/team-b/").status_code == 404
    assert leaks(scoped.get(f"/api/v1/clusters/{world.cluster.pk}/").content) == []
    unscoped = api_as(world.users["staff"])
    assert unscoped.get(f"/api/v1/clusters/{world.cluster.pk}/serve-config/").status_code == 200


def test_only_an_owner_grants_changes_or_removes_the_owner_role(world):
    admin = api_as(world.users["admin"])
    owner = world.users["owner"]
    assert (
        admin.post(
            "/api/v1/teams/team-a/members/", {"username": "outsider", "role": "owner"}, format="json"
        ).status_code
        == 403
    )
    assert admin.patch("/api/v1/teams/team-a/members/aadmin/", {"role": "owner"}, format="json").status_code == 403
    assert admin.patch("/api/v1/teams/team-a/members/aowner/", {"role": "member"}, format="json").status_code == 403
    assert admin.delete("/api/v1/teams/team-a/members/aowner/").status_code == 403
    assert admin.delete("/api/v1/teams/team-a/").status_code == 403
    assert Membership.objects.get(team=world.teams["a"], user=owner).role == Role.OWNER
    assert Membership.objects.get(team=world.teams["a"], user=world.users["admin"]).role == Role.ADMIN
    # the same through the members page
    page = page_as(world.users["admin"])
    m = Membership.objects.get(team=world.teams["a"], user=owner)
    resp = page.post(f"/teams/team-a/members/{m.pk}/role/", {"role": "viewer"})
    assert resp.status_code == 400 and Membership.objects.get(pk=m.pk).role == Role.OWNER
    # an owner may; the last owner stays
    by_owner = api_as(owner)
    assert by_owner.patch("/api/v1/teams/team-a/members/aadmin/", {"role": "owner"}, format="json").status_code == 200
    assert by_owner.patch("/api/v1/teams/team-a/members/aowner/", {"role": "admin"}, format="json").status_code == 200
    last = api_as(world.users["admin"]).patch("/api/v1/teams/team-a/members/aadmin/", {"role": "admin"}, format="json")
    assert last.status_code == 400 and "at least one owner" in last.content.decode()


def test_a_deactivated_users_token_is_refused(world):
    gone = api_as(world.users["deactivated"])
    world.users["deactivated"].is_active = False
    world.users["deactivated"].save()
    assert gone.get("/api/v1/teams/").status_code == 401


def test_an_incident_of_another_team_is_not_found(world):
    other = world.objects["incident:b"]
    member = api_as(world.users["member"])
    assert member.get(f"/api/v1/incidents/{other.pk}/").status_code == 404
    assert member.post(f"/api/v1/incidents/{other.pk}/acknowledge/").status_code == 404
    assert Incident.objects.get(pk=other.pk).acknowledged_at is None
