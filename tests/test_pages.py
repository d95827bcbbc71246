"""Dashboard pages without a browser: access per role, empty states, and what each page shows."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.teams.models import ApiToken, Membership, Role

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_render_for_a_member(alice, team_a, cluster, grant):
    grant(team_a, cluster, "2")
    c = logged_in(alice)
    for url in (
        "/",
        "/clusters/",
        f"/clusters/{cluster.pk}/",
        "/teams/team-a/",
        "/teams/team-a/members/",
        "/teams/team-a/quota/",
        "/teams/team-a/tokens/",
        "/apps/new/?team=team-a",
        "/audit/",
        "/welcome/",
        "/api/docs/",
    ):
        assert c.get(url).status_code == 200, url


def test_other_teams_pages_are_404(alice, bob, team_a, team_b):
    c = logged_in(bob)
    for url in ("/teams/team-a/", "/teams/team-a/members/", "/teams/team-a/quota/", "/teams/team-a/tokens/"):
        assert c.get(url).status_code == 404, url
    added = c.post("/teams/team-a/members/add/", {"username": "bob", "role": "owner"})
    assert added.status_code == 404
    assert not Membership.objects.filter(team=team_a, user=bob).exists()


def test_viewer_and_member_cannot_manage_members_or_tokens(alice, bob, charlie, team_a):
    Membership.objects.create(team=team_a, user=bob, role=Role.MEMBER)
    Membership.objects.create(team=team_a, user=charlie, role=Role.VIEWER)
    for user in (bob, charlie):
        c = logged_in(user)
        page = c.get("/teams/team-a/members/").content.decode()
        assert "Invite a member" not in page
        assert c.post("/teams/team-a/members/add/", {"username": "x", "role": "owner"}).status_code == 404
        assert c.get("/teams/team-a/tokens/").status_code == 404
    assert logged_in(bob).get("/quota-requests/").status_code == 404


def test_token_page_shows_the_secret_once(alice, team_a):
    c = logged_in(alice)
    resp = c.post("/teams/team-a/tokens/", {"name": "ci", "role": "member"})
    page = resp.content.decode()
    assert "shown once" in page
    token = ApiToken.objects.get(name="ci")
    secret_start = page.index('id="token-secret"')
    secret = page[secret_start:].split('value="', 1)[1].split('"', 1)[0]
    assert secret.startswith(token.prefix) and len(secret) > 30
    assert secret not in c.get("/teams/team-a/tokens/").content.decode()
    bad = c.post("/teams/team-a/tokens/", {"name": "", "role": "member", "expires": "soon"})
    assert bad.status_code == 400 and "Use a date like" in bad.content.decode()


def test_member_management_in_the_ui(alice, bob, team_a):
    c = logged_in(alice)
    added = c.post("/teams/team-a/members/add/", {"username": "bob@example.com", "role": "viewer"})
    assert added.status_code == 302 and added["Location"] == "/teams/team-a/members/"
    m = Membership.objects.get(team=team_a, user=bob)
    assert m.role == "viewer"
    c.post(f"/teams/team-a/members/{m.pk}/role/", {"role": "admin"})
    assert Membership.objects.get(pk=m.pk).role == "admin"
    own = Membership.objects.get(team=team_a, user=alice)
    resp = c.post(f"/teams/team-a/members/{own.pk}/remove/")
    assert resp.status_code == 400 and "at least one owner" in resp.content.decode()
    missing = c.post("/teams/team-a/members/add/", {"username": "nobody", "role": "viewer"})
    assert missing.status_code == 400 and "No user" in missing.content.decode()
    assert c.get(f"/teams/team-a/members/{m.pk}/remove/").status_code == 405  # a change is a POST
    c.post(f"/teams/team-a/members/{m.pk}/remove/")
    assert not Membership.objects.filter(pk=m.pk).exists()


def test_empty_states_explain_the_next_step(charlie, team_a):
    c = logged_in(charlie)
    assert "Get started" in c.get("/").content.decode()
    page = c.get("/welcome/").content.decode()
    assert 'data-step="1" data-done="false"' in page and "Create a team" in page


def test_app_form_errors_are_next_to_the_fields(alice, team_a, cluster, grant):
    grant(team_a, cluster, "1")
    c = logged_in(alice)
    resp = c.post(
        "/apps/new/",
        {
            "team": "team-a",
            "cluster": cluster.pk,
            "name": "x",
            "route_prefix": "/team-a/x",
            "import_path": "examples.hello:app",
            "dep-TOTAL_FORMS": "1",
            "dep-INITIAL_FORMS": "0",
            "dep-0-name": "Hello",
            "dep-0-num_replicas": "3",
            "dep-0-num_gpus": "0.5",
        },
    )
    assert resp.status_code == 400
    page = resp.content.decode()
    # what the person asked, what is left, the field marked, and where to ask for more
    assert (
        "This application asks for 1.5 GPU in a100; the team&#x27;s quota there is 1, its other applications use 0, "
        "so 1 is left." in page
    )
    assert 'href="/teams/team-a/quota/" id="request-quota"' in page
    assert 'class="form-control is-invalid" id="dep-0-num_gpus"' in page and "Over the team's quota: see above." in page
    resp = c.post(
        "/apps/new/",
        {
            "team": "team-a",
            "cluster": cluster.pk,
            "name": "x",
            "route_prefix": "/team-a/x",
            "import_path": "examples.hello:app",
            "dep-TOTAL_FORMS": "1",
            "dep-INITIAL_FORMS": "0",
            "dep-0-name": "Hello",
            "dep-0-num_replicas": "-2",
            "dep-0-user_config": "{bad",
        },
    )
    page = resp.content.decode()
    assert 'id="dep-0-num_replicas"' in page and "Must be a whole number from 1 to 1000" in page
    assert "Not valid JSON" in page


def test_admin_edits_are_audited(staff, team_a, alice):
    from apps.audit.models import AuditEvent

    staff.is_superuser = True
    staff.save()
    c = logged_in(staff)
    resp = c.post(
        f"/admin/teams/team/{team_a.pk}/change/",
        {
            "slug": "team-a",
            "name": "Renamed in admin",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )
    assert resp.status_code == 302, resp.content.decode()[:2000]
    event = AuditEvent.objects.get(action="team.update", source="admin")
    assert event.after["name"] == "Renamed in admin" and event.actor_label == "platform"


def test_models_page_adds_and_removes_catalog_entries(alice, bob, team_a, cluster, grant):
    from apps.applications.services import application_create
    from apps.catalog.models import ModelEntry

    grant(team_a, cluster, "2")
    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="mux",
        spec={
            "route_prefix": "/team-a/mux",
            "import_path": "examples.multiplexed:app",
            "deployments": [{"name": "Mux"}],
        },
    )
    c = logged_in(alice)
    assert "No models yet" in c.get("/models/").content.decode()
    resp = c.post(
        "/models/",
        {"application": app.pk, "deployment": "Mux", "model_id": "m1", "uri": "gs://b/m1.npy", "size_bytes": "2048"},
    )
    assert resp.status_code == 302
    page = c.get("/models/").content.decode()
    assert 'data-model="m1"' in page and "not loaded" in page
    bad = c.post("/models/", {"application": app.pk, "deployment": "Mux", "model_id": "m2", "uri": "ftp://x/y"})
    assert bad.status_code == 400 and "not allowed" in bad.content.decode()
    entry = ModelEntry.objects.get()
    other = logged_in(bob)
    assert "team-a/mux" not in other.get("/models/").content.decode()  # neither a row nor a choice of the form
    taken = other.post("/models/", {"application": app.pk, "deployment": "Mux", "model_id": "m9", "uri": "gs://b/m"})
    assert taken.status_code == 400 and not ModelEntry.objects.filter(model_id="m9").exists()
    assert (
        f'<option value="{app.pk}" selected>team-a/mux</option>'
        in c.post(
            "/models/", {"application": app.pk, "deployment": "Mux", "model_id": "", "uri": "gs://b/m"}
        ).content.decode()
    )  # a refused form keeps the chosen app
    assert logged_in(bob).post(f"/models/{entry.pk}/delete/").status_code == 404
    assert ModelEntry.objects.exists()
    assert c.post(f"/models/{entry.pk}/delete/").status_code == 302
    assert not ModelEntry.objects.exists()


def test_password_reset_by_email(alice, settings):
    import re

    from django.core import mail

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    c = Client()
    assert c.post("/accounts/password_reset/", {"email": "alice@example.com"}).status_code == 302
    assert len(mail.outbox) == 1 and "alice" in mail.outbox[0].body
    link = re.search(r"http://[^/]+(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form = c.get(link, follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    done = c.post(
        form.redirect_chain[-1][0], {"new_password1": "Another-l0ng-passw0rd", "new_password2": "Another-l0ng-passw0rd"}
    )
    assert done.status_code == 302
    assert Client().login(username="alice", password="Another-l0ng-passw0rd")
    assert c.post("/accounts/password_reset/", {"email": "nobody@example.com"}).status_code == 302  # no leak
    assert len(mail.outbox) == 1


FILE_TEXT = """
applications:
  - name: fruit_app
    route_prefix: /team-a/fruit
    import_path: fruit.deployment_graph
    deployments:
      - name: MangoStand
        num_replicas: 2
        max_concurrent_queries: 4
"""


def test_a_team_applies_a_serve_config_file_after_seeing_the_plan(alice, team_a, cluster, grant):
    from apps.applications.models import Application

    grant(team_a, cluster, "2")
    c = logged_in(alice)
    page = c.get("/teams/team-a/serve-config/").content.decode()
    assert "Show the plan" in page and "/api/v1/teams/team-a/serve-config/" in page
    plan = c.post(
        "/teams/team-a/serve-config/", {"cluster": cluster.pk, "text": FILE_TEXT, "action": "plan"}
    ).content.decode()
    assert 'data-action="create"' in plan and "fruit_app" in plan and "max_ongoing_requests" in plan
    assert not Application.objects.exists()
    resp = c.post("/teams/team-a/serve-config/", {"cluster": cluster.pk, "text": FILE_TEXT, "action": "apply"})
    assert resp.status_code == 302 and Application.objects.get().name == "fruit_app"
    bad = c.post(
        "/teams/team-a/serve-config/",
        {"cluster": cluster.pk, "text": "applications:\n  - name: x\n    import_path: a.b:c\n    colour: blue\n"},
    )
    assert bad.status_code == 400 and "applications[0].colour" in bad.content.decode()


def test_staff_see_adopt_and_remove_the_apps_a_cluster_ran_before(staff, alice, team_a, make_cluster, grant):
    from apps.applications.models import Application
    from apps.audit.models import AuditEvent
    from apps.clusters.models import Cluster

    cluster = make_cluster(name="brown")
    legacy = {"name": "legacy", "route_prefix": "/legacy", "import_path": "examples.hello:app"}
    Cluster.objects.filter(pk=cluster.pk).update(
        preexisting_apps={
            "legacy": {"config": legacy, "route_prefix": "/legacy", "status": "RUNNING"},
            "old": {"config": {**legacy, "name": "old", "route_prefix": "/old"}, "route_prefix": "/old"},
        }
    )
    grant(team_a, cluster, "2")
    assert 'id="unmanaged"' not in logged_in(alice).get(f"/clusters/{cluster.pk}/").content.decode()
    c = logged_in(staff)
    page = c.get(f"/clusters/{cluster.pk}/").content.decode()
    assert 'data-app="legacy"' in page and "carried" in page
    resp = c.post(f"/clusters/{cluster.pk}/adopt/", {"app": "legacy", "team": "team-a", "name": ""})
    app = Application.objects.get(adopted_serve_name="legacy")
    assert resp.status_code == 302 and app.team == team_a and app.name == "legacy"
    c.post(f"/clusters/{cluster.pk}/unmanaged/remove/", {"app": "old", "confirm": "wrong"})
    assert "old" in Cluster.objects.get(pk=cluster.pk).preexisting_apps
    c.post(f"/clusters/{cluster.pk}/unmanaged/remove/", {"app": "old", "confirm": "old"})
    assert Cluster.objects.get(pk=cluster.pk).preexisting_apps == {}
    assert AuditEvent.objects.filter(action="cluster.unmanaged_app_remove", source="ui").exists()


def test_the_app_page_shows_what_differs_field_by_field(alice, team_a, cluster, grant, api):
    from apps.applications.models import Application
    from tests.conftest import app_body

    grant(team_a, cluster, "2")
    app_id = api(alice).post("/api/v1/applications/", app_body("team-a", cluster.pk, "web"), format="json").json()["id"]
    Application.objects.filter(pk=app_id).update(
        config_diff=[{"field": "deployments[Hello].num_replicas", "desired": 1, "observed": 5}]
    )
    page = logged_in(alice).get(f"/apps/{app_id}/").content.decode()
    assert "Ray runs a different config" in page and "deployments[Hello].num_replicas" in page


def test_forms_refuse_what_they_cannot_parse_and_say_why(alice, team_a, cluster, grant):
    """Pages parse their POSTs with Django forms: a bad value is a message next to its field, a tampered form a 404,
    never a 500, and nothing is saved."""
    from apps.catalog.models import ModelEntry
    from apps.teams.models import ApiToken

    grant(team_a, cluster, "2")
    c = logged_in(alice)
    resp = c.post("/teams/team-a/tokens/", {"name": "ci", "role": "member", "expires": "31/01/2027"})
    assert resp.status_code == 400 and "Use a date like 2027-01-31." in resp.content.decode()
    assert not ApiToken.objects.filter(name="ci").exists()
    assert c.post("/teams/team-a/tokens/999999/revoke/").status_code == 404
    assert c.post("/teams/team-a/members/promote/", {"username": "bob"}).status_code == 404
    assert c.post("/teams/team-a/members/x/role/", {"role": "admin"}).status_code == 404
    resp = c.post("/teams/team-a/quota/", {"cluster": "first", "pool": "a100", "gpus": "1", "reason": "r"})
    assert resp.status_code == 400 and "Choose a cluster." in resp.content.decode()
    from apps.applications.services import application_create
    from tests.conftest import app_body

    spec = {k: v for k, v in app_body("team-a", cluster.pk, "m").items() if k not in ("team", "cluster", "name")}
    app = application_create(actor=alice, team=team_a, cluster=cluster, name="m", spec=spec)
    resp = c.post(
        "/models/",
        {"application": str(app.pk), "deployment": "Hello", "model_id": "m", "uri": "s3://b/m", "size_bytes": "big"},
    )
    assert resp.status_code == 400 and "Must be a whole number of bytes." in resp.content.decode()
    assert not ModelEntry.objects.exists()
    # An app form without the formset's management fields: no deployment is read, the page says so.
    resp = c.post(
        "/apps/new/",
        {
            "team": "team-a",
            "cluster": cluster.pk,
            "name": "x",
            "import_path": "examples.hello:app",
            "dep-0-name": "Hello",
        },
    )
    assert resp.status_code == 400 and "deployment" in resp.content.decode().lower()
    resp = c.post(
        "/apps/new/",
        {
            "team": "team-a",
            "cluster": cluster.pk,
            "name": "x",
            "import_path": "examples.hello:app",
            "dep-TOTAL_FORMS": "1",
            "dep-INITIAL_FORMS": "0",
            "dep-0-name": "Hello",
            "dep-0-num_gpus": "inf",
        },
    )
    assert resp.status_code == 400 and "Must be a finite number." in resp.content.decode()
