"""Every role x every action through the API, and cross-team attempts through every endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.teams.models import Membership
from tests.conftest import app_body

pytestmark = pytest.mark.django_db

ROLES = ["owner", "admin", "member", "viewer", "outsider", "staff"]


@pytest.fixture
def world(make_user, make_team, make_cluster, grant, staff):
    from apps.applications.services import application_create

    owner = make_user("owner")
    team = make_team("team-x", owner)
    users = {"owner": owner, "staff": staff, "outsider": make_user("outsider")}
    for role in ("admin", "member", "viewer"):
        users[role] = make_user(role)
        Membership.objects.create(team=team, user=users[role], role=role)
    make_user("newbie")
    cluster = make_cluster()
    grant(team, cluster, "8")
    spec = {
        "route_prefix": "/team-x/app",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 1}],
    }
    app = application_create(actor=owner, team=team, cluster=cluster, name="app", spec=spec)
    return {"users": users, "team": team, "cluster": cluster, "app": app}


def act(world, api, role: str, action: str):
    c = api(world["users"][role])
    app, cluster = world["app"], world["cluster"]
    url = f"/api/v1/applications/{app.pk}/"
    calls = {
        "read_app": lambda: c.get(url),
        "list_apps": lambda: c.get("/api/v1/applications/?team=team-x"),
        "create_app": lambda: c.post("/api/v1/applications/", app_body("team-x", cluster.pk, "new"), format="json"),
        "update_app": lambda: c.patch(url, {"args": {"greeting": "yo"}}, format="json"),
        "rollback_app": lambda: c.post(f"{url}rollback/", {"revision": 1}, format="json"),
        "delete_app": lambda: c.delete(url),
        "read_team": lambda: c.get("/api/v1/teams/team-x/"),
        "rename_team": lambda: c.patch("/api/v1/teams/team-x/", {"name": "X"}, format="json"),
        "delete_team": lambda: c.delete("/api/v1/teams/team-x/"),
        "list_members": lambda: c.get("/api/v1/teams/team-x/members/"),
        "add_member": lambda: c.post(
            "/api/v1/teams/team-x/members/", {"username": "newbie", "role": "viewer"}, format="json"
        ),
        "change_role": lambda: c.patch("/api/v1/teams/team-x/members/viewer/", {"role": "member"}, format="json"),
        "create_team_token": lambda: c.post(
            "/api/v1/tokens/?team=team-x", {"name": "ci", "team": "team-x", "role": "viewer"}, format="json"
        ),
        "request_quota": lambda: c.post(
            "/api/v1/quota-requests/",
            {"team": "team-x", "cluster": cluster.pk, "pool": "a100", "gpus": "9", "reason": "more"},
            format="json",
        ),
        "set_quota": lambda: c.post(
            "/api/v1/quotas/", {"team": "team-x", "cluster": cluster.pk, "pool": "a100", "gpus": "9"}, format="json"
        ),
        "create_cluster": lambda: c.post(
            "/api/v1/clusters/", {"name": "c2", "kind": "ray", "dashboard_url": "http://127.0.0.1:1"}, format="json"
        ),
        "read_audit": lambda: c.get("/api/v1/audit-events/?team=team-x"),
    }
    return calls[action]()


R, W, A, OWN, S = "viewer", "member", "admin", "owner", "staff"
# action -> the lowest team role allowed (staff counts as owner of every team), or "staff" for platform actions.
NEEDS = {
    "read_app": R,
    "list_apps": R,
    "create_app": W,
    "update_app": W,
    "rollback_app": W,
    "delete_app": W,
    "read_team": R,
    "rename_team": A,
    "delete_team": OWN,
    "list_members": R,
    "add_member": A,
    "change_role": A,
    "create_team_token": A,
    "request_quota": A,
    "set_quota": S,
    "create_cluster": S,
    "read_audit": A,
}
RANK = {"outsider": 0, "viewer": 1, "member": 2, "admin": 3, "owner": 4, "staff": 5}
OK = {
    "create_app": 201,
    "add_member": 201,
    "create_team_token": 201,
    "request_quota": 201,
    "set_quota": 201,
    "create_cluster": 201,
    "delete_app": 204,
    "delete_team": 204,
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(NEEDS))
def test_role_matrix(world, api, role, action):
    if action == "delete_team":
        world["app"].delete()  # a team with applications cannot be deleted at all
    needed = NEEDS[action]
    allowed = RANK[role] >= (5 if needed == S else RANK[needed])
    resp = act(world, api, role, action)
    if action == "list_apps":
        assert resp.status_code == 200
        assert resp.json()["count"] == (1 if allowed else 0)
    elif action == "read_audit":
        assert resp.status_code == 200
        assert (resp.json()["count"] > 0) == allowed
    elif allowed:
        assert resp.status_code == OK.get(action, 200), (role, action, resp.content)
    elif role == "outsider" and needed != S:
        # Another team's objects do not exist for outsiders (creates name a team they are not in: 400).
        assert resp.status_code in (404, 400), (role, action, resp.status_code)
        if resp.status_code == 400:
            assert "team" in resp.json()
    else:
        assert resp.status_code == 403, (role, action, resp.status_code, resp.content)


def test_last_owner_cannot_be_removed_or_demoted(world, api):
    c = api(world["users"]["owner"])
    assert c.delete("/api/v1/teams/team-x/members/owner/").status_code == 400
    assert c.patch("/api/v1/teams/team-x/members/owner/", {"role": "admin"}, format="json").status_code == 400
    assert c.patch("/api/v1/teams/team-x/members/admin/", {"role": "owner"}, format="json").status_code == 200
    assert c.patch("/api/v1/teams/team-x/members/owner/", {"role": "member"}, format="json").status_code == 200


def test_team_token_is_scoped_to_its_team_and_role(world, api, make_team):
    from rest_framework.test import APIClient

    admin = world["users"]["admin"]
    other = make_team("team-y", admin)
    resp = api(admin).post("/api/v1/tokens/", {"name": "ci", "team": "team-x", "role": "viewer"}, format="json")
    secret = resp.json()["token"]
    assert "secret_hash" not in resp.json()
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert c.get(f"/api/v1/applications/{world['app'].pk}/").status_code == 200
    assert c.patch(f"/api/v1/applications/{world['app'].pk}/", {"args": {"a": 1}}, format="json").status_code == 403
    assert [t["slug"] for t in c.get("/api/v1/teams/").json()["results"]] == ["team-x"]
    assert c.get("/api/v1/teams/team-y/").status_code == 404  # the admin's own other team, outside the token
    assert api(admin).get(f"/api/v1/teams/{other.slug}/").status_code == 200  # while the admin's login sees it
    too_high = api(admin).post("/api/v1/tokens/", {"name": "ci", "team": "team-x", "role": "owner"}, format="json")
    assert too_high.status_code == 400 and "role" in too_high.json()


def test_token_expiry_and_revocation(world, api):
    from rest_framework.test import APIClient

    from apps.teams.models import ApiToken

    owner = world["users"]["owner"]
    soon = (timezone.now() + timedelta(hours=1)).isoformat()
    resp = api(owner).post(
        "/api/v1/tokens/", {"name": "short", "team": "team-x", "role": "member", "expires_at": soon}, format="json"
    )
    assert resp.status_code == 201
    token_id, secret = resp.json()["id"], resp.json()["token"]
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert c.get("/api/v1/applications/").status_code == 200
    assert ApiToken.objects.get(pk=token_id).last_used_at is not None
    assert api(owner).get("/api/v1/tokens/").json()["results"][0]["last_used_at"] is not None
    ApiToken.objects.filter(pk=token_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = c.get("/api/v1/applications/")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    ApiToken.objects.filter(pk=token_id).update(expires_at=None)
    assert c.get("/api/v1/applications/").status_code == 200
    assert api(owner).delete(f"/api/v1/tokens/{token_id}/").status_code == 204
    revoked = c.get("/api/v1/applications/")
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    assert api(owner).post("/api/v1/tokens/", {"name": "old", "expires_at": past}, format="json").status_code == 400


def test_tokens_are_stored_hashed_and_never_returned(world, api):
    from apps.teams.models import ApiToken

    owner = world["users"]["owner"]
    secret = api(owner).post("/api/v1/tokens/", {"name": "x"}, format="json").json()["token"]
    stored = ApiToken.objects.get(name="x")
    assert secret not in (stored.secret_hash, stored.prefix) and stored.secret_hash != secret
    listing = api(owner).get("/api/v1/tokens/").content.decode()
    assert secret not in listing and stored.secret_hash not in listing


def test_cluster_auth_token_is_never_returned(world, api):
    staff = world["users"]["staff"]
    resp = api(staff).post(
        "/api/v1/clusters/",
        {
            "name": "secure",
            "kind": "ray",
            "dashboard_url": "http://127.0.0.1:1",
            "auth_token": "s3cr3t-ray-token",
            "pools": [{"name": "a100", "resource": "GPU", "capacity": "8"}],
        },
        format="json",
    )
    assert resp.status_code == 201
    assert "s3cr3t-ray-token" not in resp.content.decode() and resp.json()["has_auth_token"] is True
    for user in ("staff", "viewer"):
        body = api(world["users"][user]).get("/api/v1/clusters/").content.decode()
        assert "s3cr3t-ray-token" not in body
    events = api(staff).get("/api/v1/audit-events/").content.decode()
    assert "s3cr3t-ray-token" not in events


def test_outsider_sees_nothing_of_another_team_anywhere(world, api):
    c = api(world["users"]["outsider"])
    app = world["app"]
    for url in (
        f"/api/v1/applications/{app.pk}/",
        f"/api/v1/applications/{app.pk}/revisions/",
        "/api/v1/teams/team-x/",
        "/api/v1/teams/team-x/members/",
    ):
        assert c.get(url).status_code == 404, url
    for url in (
        "/api/v1/applications/",
        "/api/v1/teams/",
        "/api/v1/quotas/",
        "/api/v1/quota-requests/",
        "/api/v1/tokens/?team=team-x",
        "/api/v1/audit-events/",
        f"/api/v1/sync-runs/?cluster={world['cluster'].pk}",
    ):
        body = c.get(url).json()
        assert body["count"] == 0, (url, body)
    assert c.post(f"/api/v1/applications/{app.pk}/rollback/", {"revision": 1}, format="json").status_code == 404


def test_audit_log_cannot_be_edited(world, api):
    staff = api(world["users"]["staff"])
    event = staff.get("/api/v1/audit-events/").json()["results"][0]
    url = f"/api/v1/audit-events/{event['id']}/"
    assert staff.put(url, {"action": "forged"}, format="json").status_code == 405
    assert staff.patch(url, {"action": "forged"}, format="json").status_code == 405
    assert staff.delete(url).status_code == 405
    assert staff.post("/api/v1/audit-events/", {"action": "forged"}, format="json").status_code == 405


def test_every_mutation_is_audited_with_request_id(world, api):
    from apps.audit.models import AuditEvent

    owner = api(world["users"]["owner"])
    url = f"/api/v1/applications/{world['app'].pk}/"
    resp = owner.patch(url, {"args": {"greeting": "yo"}}, format="json", HTTP_X_REQUEST_ID="req-123")
    assert resp["X-Request-ID"] == "req-123"
    event = AuditEvent.objects.get(request_id="req-123")
    assert event.action == "application.update" and event.actor_label == "owner" and event.team_slug == "team-x"
    assert event.before["spec"].get("args") is None and event.after["spec"]["args"] == {"greeting": "yo"}
    owner.post("/api/v1/teams/team-x/members/", {"username": "newbie", "role": "viewer"}, format="json")
    owner.delete(url)
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {
        "application.create",
        "application.update",
        "application.delete",
        "membership.add",
        "team.create",
        "quota.set",
    } <= actions
    filtered = owner.get("/api/v1/audit-events/?action=membership").json()
    assert filtered["count"] == 1 and filtered["results"][0]["action"] == "membership.add"
    assert owner.get("/api/v1/audit-events/?since=yesterday").status_code == 400
