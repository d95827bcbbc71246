"""The starter grant: staff set one per cluster; every new team gets it at once, so its first model is admitted with
no human step; when it ends, growth is refused, nothing running is torn down, and the team is told once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.quotas.models import Quota, StarterGrant
from apps.quotas.services import quota_set, starter_grants_ended
from tests.conftest import app_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def sandbox(make_cluster, staff, api):
    cluster = make_cluster(name="sandbox")
    resp = api(staff).patch(
        f"/api/v1/clusters/{cluster.pk}/",
        {"starter_pool": "a100", "starter_gpus": "0.5", "starter_days": 14},
        format="json",
    )
    assert resp.status_code == 200, resp.content
    return Cluster.objects.get(pk=cluster.pk)


def new_team(client, slug: str = "newbies") -> None:
    resp = client.post("/api/v1/teams/", {"slug": slug, "name": "Newbies"}, format="json")
    assert resp.status_code == 201, resp.content


def test_staff_set_the_grant_per_cluster_and_bad_values_name_the_field(make_cluster, staff, api):
    cluster = make_cluster(name="c1")
    client = api(staff)
    unknown = client.patch(
        f"/api/v1/clusters/{cluster.pk}/", {"starter_pool": "nope", "starter_gpus": "1"}, format="json"
    )
    assert unknown.status_code == 400 and "starter_pool" in unknown.json()
    assert "No pool 'nope'" in str(unknown.json()["starter_pool"])
    negative = client.patch(f"/api/v1/clusters/{cluster.pk}/", {"starter_gpus": "-1"}, format="json")
    assert negative.status_code == 400 and "starter_gpus" in negative.json()
    missing_pool = client.patch(f"/api/v1/clusters/{cluster.pk}/", {"starter_gpus": "1"}, format="json")
    assert missing_pool.status_code == 400 and "starter_pool" in missing_pool.json()
    grant = StarterGrant.objects.get(pk=cluster.pk)
    assert grant.starter_gpus == 0 and grant.starter_pool == ""  # nothing changed by the refusals


def test_a_new_team_gets_the_grant_at_once_and_its_first_model_is_admitted(sandbox, make_user, api):
    newcomer = make_user("newcomer")
    client = api(newcomer)
    before = timezone.now()
    new_team(client)
    quota = Quota.objects.get(team__slug="newbies", pool__cluster=sandbox)
    assert quota.starter and quota.gpus == sandbox.starter_grant.starter_gpus
    assert before + timedelta(days=14) <= quota.expires_at <= timezone.now() + timedelta(days=14)
    assert AuditEvent.objects.filter(action="quota.starter_grant", team__slug="newbies").count() == 1
    first = client.post("/api/v1/applications/", app_body("newbies", sandbox.pk, "first"), format="json")
    assert first.status_code == 201, first.content  # 0.5 GPU within the 0.5 grant, nobody approved anything
    second = client.post("/api/v1/applications/", app_body("newbies", sandbox.pk, "second"), format="json")
    assert second.status_code == 400 and "quota 0.5" in str(second.json()["quota"])
    listed = client.get("/api/v1/quotas/?team=newbies").json()["results"]
    assert listed[0]["starter"] is True and listed[0]["expires_at"]
    page = Client()
    page.force_login(newcomer)
    html = page.get("/teams/newbies/quota/").content.decode()
    assert "starter-grant" in html and "Starter grant: ends on" in html


def test_when_the_grant_ends_growth_is_refused_nothing_is_torn_down_and_the_team_is_told_once(sandbox, make_user, api):
    newcomer = make_user("newcomer")
    client = api(newcomer)
    new_team(client)
    body = app_body("newbies", sandbox.pk, "first")
    body["deployments"][0]["ray_actor_options"]["num_gpus"] = 0.25
    app_id = client.post("/api/v1/applications/", body, format="json").json()["id"]
    Quota.objects.filter(team__slug="newbies").update(expires_at=timezone.now() - timedelta(minutes=1))
    grown = dict(body, deployments=[{**body["deployments"][0], "num_replicas": 2}])
    refused = client.put(f"/api/v1/applications/{app_id}/", grown, format="json")
    assert refused.status_code == 400
    assert "starter grant ended" in str(refused.json()["quota"]) and "running apps keep running" in str(
        refused.json()["quota"]
    )
    another = client.post("/api/v1/applications/", app_body("newbies", sandbox.pk, "more"), format="json")
    assert another.status_code == 400
    app = Application.objects.get(pk=app_id)
    assert app.deleted_at is None and app.current_revision.spec["deployments"][0]["num_replicas"] == 1
    # Shrinking stays allowed.
    smaller = dict(body, deployments=[{**body["deployments"][0], "ray_actor_options": {"num_cpus": 0.1}}])
    assert client.put(f"/api/v1/applications/{app_id}/", smaller, format="json").status_code == 200
    assert starter_grants_ended() == 1
    assert starter_grants_ended() == 0  # once
    assert len(mail.outbox) == 1 and "newcomer@example.com" in mail.outbox[0].to
    assert "keep running" in mail.outbox[0].body and "/teams/newbies/quota/" in mail.outbox[0].body
    assert AuditEvent.objects.filter(action="quota.starter_ended", team__slug="newbies").count() == 1
    page = Client()
    page.force_login(newcomer)
    assert "The starter grant ended on" in page.get("/teams/newbies/quota/").content.decode()


def test_a_quota_set_by_staff_replaces_the_grant_and_does_not_end(sandbox, make_user, api, staff):
    client = api(make_user("newcomer"))
    new_team(client)
    team = Quota.objects.get(team__slug="newbies").team
    quota = quota_set(actor=staff, team=team, cluster=sandbox, pool_name="a100", gpus="2")
    assert not quota.starter and quota.expires_at is None
    assert Quota.objects.filter(team=team).count() == 1


def test_no_grant_configured_means_no_quota(make_cluster, make_user, api):
    make_cluster(name="plain")
    new_team(api(make_user("newcomer")))
    assert not Quota.objects.filter(team__slug="newbies").exists()


def test_getting_started_makes_the_team_from_its_name_and_deploys_the_template_on_the_grant(sandbox, make_user):
    newcomer, viewer = make_user("newcomer"), make_user("viewer")
    page = Client()
    page.force_login(newcomer)
    made = page.post("/teams/new/", {"name": "Newbie's Vision", "next": "/welcome/"})
    assert made.status_code == 302 and made["Location"] == "/welcome/"
    page.post("/teams/new/", {"name": "Newbie's Vision", "next": "/welcome/"})  # the same name again
    slugs = sorted(m.team.slug for m in newcomer.memberships.select_related("team"))
    assert slugs == ["newbies-vision", "newbies-vision-2"]

    deployed = page.post("/welcome/deploy-template/", {"team": "newbies-vision"})
    app = Application.objects.get(team__slug="newbies-vision")
    assert deployed["Location"] == f"/apps/{app.pk}/"
    spec = app.current_revision.spec
    assert (app.name, app.cluster, spec["route_prefix"]) == ("hello", sandbox, "/newbies-vision/hello")
    assert spec["deployments"][0]["ray_actor_options"] == {"num_cpus": 0.1, "num_gpus": 0.5}  # the grant's GPUs
    # A second click asks for another 0.5 GPU: the grant (0.5) is used up, so admission refuses and the page says so.
    again = page.post("/welcome/deploy-template/", {"team": "newbies-vision"}, follow=True)
    assert b"The template was not deployed" in again.content and b"a100" in again.content
    assert list(Application.objects.filter(team__slug="newbies-vision").values_list("name", flat=True)) == ["hello"]
    viewer.memberships.create(team=app.team, role="viewer")
    as_viewer = Client()
    as_viewer.force_login(viewer)
    as_viewer.post("/welcome/deploy-template/", {"team": "newbies-vision"})
    assert Application.objects.filter(team__slug="newbies-vision").count() == 1


def test_deploying_the_template_needs_a_team_you_may_deploy_in(sandbox, make_user, team_a):
    outsider = make_user("outsider")
    page = Client()
    page.force_login(outsider)
    refused = page.post("/welcome/deploy-template/", {"team": "team-a"})
    assert refused.status_code == 404  # Getting started offers only teams one may deploy in: this is a forged form
    assert not Application.objects.exists()
