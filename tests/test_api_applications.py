"""The applications API without Ray: validation, isolation, versions, dry runs, quota, revisions."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.applications.models import Application, Revision
from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.teams.models import Membership, Role
from tests.conftest import app_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(team_a, team_b, cluster, grant, alice, bob):
    grant(team_a, cluster, "4")
    grant(team_b, cluster, "4")
    return cluster


def snapshot() -> tuple:
    return (
        Application.objects.count(),
        Revision.objects.count(),
        Cluster.objects.values_list("desired_generation", flat=True).first(),
        AuditEvent.objects.filter(action__startswith="application").count(),
    )


def test_create_returns_app_with_revision_and_version(setup, api, alice):
    resp = api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "sentiment"), format="json")
    assert resp.status_code == 201, resp.content
    data = resp.json()
    assert data["revision"] == 1 and data["version"] == 1 and data["state"] == "pending"
    assert data["serve_name"] == "team-a--sentiment"
    assert resp["ETag"] == '"1"'
    assert Cluster.objects.get(pk=setup.pk).desired_generation == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "../etc"}, "name"),
        ({"name": "naïve"}, "name"),
        ({"route_prefix": "relative"}, "route_prefix"),
        ({"import_path": "not a path"}, "import_path"),
        ({"deployments": [{"name": "Hello", "num_replicas": -1}]}, "deployments[0].num_replicas"),
        ({"deployments": [{"name": "Hello", "num_replicas": 1.5}]}, "deployments[0].num_replicas"),
        ({"deployments": [{"name": "Hello", "replicas": 2}]}, "deployments[0].replicas"),
        (
            {"deployments": [{"name": "Hello", "ray_actor_options": {"num_gpus": -0.5}}]},
            "deployments[0].ray_actor_options.num_gpus",
        ),
        ({"deployments": "many"}, "deployments"),
        ({"team": "no-such-team"}, "team"),
        ({"cluster": 99999}, "cluster"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(setup, api, alice, change, field):
    before = snapshot()
    resp = api(alice).post("/api/v1/applications/", {**app_body("team-a", setup.pk, "ok"), **change}, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json(), resp.json()
    assert snapshot() == before


def test_route_prefix_of_another_team_is_refused(setup, api, alice, bob, team_a):
    from apps.applications.models import RouteGrant

    RouteGrant.objects.create(team=team_a, prefix="/shared")  # staff gave team A a prefix outside its namespace
    assert (
        api(alice)
        .post("/api/v1/applications/", app_body("team-a", setup.pk, "x", route_prefix="/shared"), format="json")
        .status_code
        == 201
    )
    before = snapshot()
    resp = api(bob).post(
        "/api/v1/applications/", app_body("team-b", setup.pk, "y", route_prefix="/shared"), format="json"
    )
    assert resp.status_code == 400
    assert "another team" in resp.json()["route_prefix"][0]
    assert snapshot() == before


def test_duplicate_name_in_team_is_refused(setup, api, alice):
    assert api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").status_code == 201
    resp = api(alice).post(
        "/api/v1/applications/", app_body("team-a", setup.pk, "x", route_prefix="/team-a/other"), format="json"
    )
    assert resp.status_code == 400 and "name" in resp.json()


def test_same_name_in_two_teams_is_fine(setup, api, alice, bob):
    assert api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").status_code == 201
    assert api(bob).post("/api/v1/applications/", app_body("team-b", setup.pk, "x"), format="json").status_code == 201


def test_malformed_json_and_huge_bodies(setup, api, alice, settings):
    client = api(alice)
    resp = client.post("/api/v1/applications/", data="{not json", content_type="application/json")
    assert resp.status_code == 400
    huge = json.dumps(app_body("team-a", setup.pk, "big", args={"blob": "x" * (2 * 1024 * 1024)}))
    before = snapshot()
    resp = client.post("/api/v1/applications/", data=huge, content_type="application/json")
    assert resp.status_code in (400, 413)
    assert snapshot() == before
    resp = client.post("/api/v1/applications/", data="[1, 2]", content_type="application/json")
    assert resp.status_code == 400


def test_other_teams_apps_are_404_and_absent_from_lists(setup, api, alice, bob, charlie):
    created = api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").json()
    url = f"/api/v1/applications/{created['id']}/"
    for user in (bob, charlie):
        client = api(user)
        assert client.get(url).status_code == 404
        assert client.patch(url, {"route_prefix": "/stolen"}, format="json").status_code == 404
        assert client.delete(url).status_code == 404
        assert client.get(f"{url}revisions/").status_code == 404
        assert client.get("/api/v1/applications/").json()["count"] == 0
        assert client.get("/api/v1/applications/?team=team-a").json()["count"] == 0
    assert Application.objects.get(pk=created["id"]).route_prefix == "/team-a/x"


def test_viewer_reads_but_cannot_write(setup, api, alice, charlie, team_a):
    Membership.objects.create(team=team_a, user=charlie, role=Role.VIEWER)
    created = api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").json()
    viewer = api(charlie)
    assert viewer.get(f"/api/v1/applications/{created['id']}/").status_code == 200
    assert (
        viewer.patch(f"/api/v1/applications/{created['id']}/", {"route_prefix": "/v"}, format="json").status_code == 403
    )
    assert viewer.post("/api/v1/applications/", app_body("team-a", setup.pk, "y"), format="json").status_code == 403


def test_no_token_is_401(setup, api):
    assert api(None).get("/api/v1/applications/").status_code == 401
    client = api(None)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/applications/").status_code == 401


def test_update_makes_a_revision_and_stale_version_conflicts(setup, api, alice):
    client = api(alice)
    app = client.post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").json()
    url = f"/api/v1/applications/{app['id']}/"
    deps = [{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}]
    resp = client.patch(url, {"deployments": deps}, format="json", HTTP_IF_MATCH='"1"')
    assert resp.status_code == 200 and resp.json()["revision"] == 2 and resp.json()["version"] == 2
    stale = client.patch(
        url, {"deployments": deps[:0] + [dict(deps[0], num_replicas=1)]}, format="json", HTTP_IF_MATCH='"1"'
    )
    assert stale.status_code == 412
    assert "version" in stale.json()
    assert Application.objects.get(pk=app["id"]).current_revision.number == 2
    body_version = client.patch(url, {"deployments": [dict(deps[0], num_replicas=1)], "version": 1}, format="json")
    assert body_version.status_code == 412
    revs = client.get(f"{url}revisions/").json()
    assert [r["number"] for r in revs["results"]] == [2, 1]


def test_put_replaces_the_spec(setup, api, alice):
    client = api(alice)
    app = client.post(
        "/api/v1/applications/", app_body("team-a", setup.pk, "x", args={"greeting": "hi"}), format="json"
    ).json()
    resp = client.put(f"/api/v1/applications/{app['id']}/", app_body("team-a", setup.pk, "x"), format="json")
    assert resp.status_code == 200 and resp.json()["args"] == {}
    resp = client.put(f"/api/v1/applications/{app['id']}/", app_body("team-b", setup.pk, "x"), format="json")
    assert resp.status_code == 400 and "team" in resp.json()


def test_rollback_copies_an_old_spec_into_a_new_revision(setup, api, alice):
    client = api(alice)
    app = client.post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").json()
    url = f"/api/v1/applications/{app['id']}/"
    client.patch(url, {"args": {"greeting": "hey"}}, format="json")
    resp = client.post(f"{url}rollback/", {"revision": 1}, format="json")
    assert resp.status_code == 200
    assert resp.json()["revision"] == 3 and resp.json()["args"] == {}
    assert client.post(f"{url}rollback/", {"revision": 42}, format="json").status_code == 400
    assert client.post(f"{url}rollback/", {"revision": "one"}, format="json").status_code == 400


def test_dry_run_saves_nothing(setup, api, alice):
    before = snapshot()
    resp = api(alice).post("/api/v1/applications/?dry_run=true", app_body("team-a", setup.pk, "x"), format="json")
    assert resp.status_code == 200 and resp.json()["dry_run"] is True and resp.json()["valid"] is True
    assert snapshot() == before


def test_quota_refusal_names_pool_demand_quota_and_use(setup, api, alice):
    client = api(alice)
    deps = [{"name": "Hello", "num_replicas": 6, "ray_actor_options": {"num_gpus": 0.5}}]
    assert (
        client.post(
            "/api/v1/applications/", app_body("team-a", setup.pk, "x", deployments=deps), format="json"
        ).status_code
        == 201
    )
    before = snapshot()
    too_much = [{"name": "Hello", "num_replicas": 3, "ray_actor_options": {"num_gpus": 0.5}}]
    resp = client.post("/api/v1/applications/", app_body("team-a", setup.pk, "y", deployments=too_much), format="json")
    assert resp.status_code == 400
    body = resp.json()
    assert body["quota"] == ["team team-a needs 4.5 GPU in a100 on prod-1, quota 4, in use 3"]
    assert body["quota_detail"][0] == {
        "pool": "a100",
        "resource": "GPU",
        "demand": "4.5",
        "requested": "1.5",
        "quota": "4",
        "in_use": "3",
    }
    assert snapshot() == before
    exactly = [{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_gpus": 0.5}}]
    assert (
        client.post(
            "/api/v1/applications/", app_body("team-a", setup.pk, "y", deployments=exactly), format="json"
        ).status_code
        == 201
    )


def test_delete_marks_deleting_and_frees_the_name(setup, api, alice):
    client = api(alice)
    app = client.post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").json()
    assert client.delete(f"/api/v1/applications/{app['id']}/").status_code == 204
    assert Application.objects.get(pk=app["id"]).state == "deleting"
    assert client.post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json").status_code == 201


def test_merged_config_query_count_does_not_grow_with_apps(setup, api, alice, team_a):
    from django.contrib.auth import get_user_model

    from apps.applications.services import application_create
    from apps.deploys.config import build_serve_config

    Cluster.objects.filter(pk=setup.pk).update(team_max_apps=500, team_max_replicas=500)
    setup.refresh_from_db()
    user = get_user_model().objects.get(username="alice")
    spec = {
        "route_prefix": "/",
        "import_path": "examples.hello:app",
        "deployments": [{"name": "Hello", "num_replicas": 1}],
    }
    for i in range(10):
        application_create(
            actor=user, team=team_a, cluster=setup, name=f"a{i}", spec={**spec, "route_prefix": f"/team-a/a{i}"}
        )
    with CaptureQueriesContext(connection) as ten:
        assert len(build_serve_config(setup).config["applications"]) == 10
    for i in range(10, 200):
        application_create(
            actor=user, team=team_a, cluster=setup, name=f"a{i}", spec={**spec, "route_prefix": f"/team-a/a{i}"}
        )
    with CaptureQueriesContext(connection) as two_hundred:
        assert len(build_serve_config(setup).config["applications"]) == 200
    assert len(ten) == len(two_hundred) <= 2  # applications with revisions, and the model catalog


def test_serve_config_is_staff_only(setup, api, alice, staff):
    assert api(alice).get(f"/api/v1/clusters/{setup.pk}/serve-config/").status_code == 403
    api(alice).post("/api/v1/applications/", app_body("team-a", setup.pk, "x"), format="json")
    resp = api(staff).get(f"/api/v1/clusters/{setup.pk}/serve-config/")
    assert resp.status_code == 200
    assert [a["name"] for a in resp.json()["applications"]] == ["team-a--x"]


def test_token_endpoint(setup, api, alice):
    from tests.conftest import PASSWORD

    client = api(None)
    resp = client.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert resp.status_code == 200
    token = resp.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/teams/").status_code == 200
    assert (
        api(None).post("/api/v1/auth/token/", {"username": "alice", "password": "wrong"}, format="json").status_code
        == 400
    )


def test_openapi_schema_builds(api, alice):
    resp = api(alice).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert resp.status_code == 200
    assert "/api/v1/applications/{id}/rollback/" in resp.json()["paths"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": 5}, "name"),
        ({"cluster": "1"}, "cluster"),
        ({"cluster": True}, "cluster"),
        ({"import_path": ["examples.hello:app"]}, "import_path"),
        ({"args": [1]}, "args"),
        ({"deployments": [{"name": 3}]}, "deployments[0].name"),
        ({"deployments": [{"name": "Hello", "max_ongoing_requests": "5"}]}, "deployments[0].max_ongoing_requests"),
        ({"deployments": ["Hello"]}, "deployments[0]"),
    ],
)
def test_the_write_serializer_enforces_the_schema_naming_the_field(setup, api, alice, change, field):
    """What the OpenAPI schema declares is what the server takes: types are not coerced, errors name the field."""
    body = {**app_body("team-a", setup.pk, "typed"), **change}
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 400 and field in resp.json(), resp.json()
    assert not Application.objects.filter(name="typed").exists()


def test_deployment_fields_the_serializer_does_not_declare_reach_rays_schema(setup, api, alice):
    body = app_body("team-a", setup.pk, "extra")
    body["deployments"][0]["graceful_shutdown_timeout_s"] = 5
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["deployments"][0]["graceful_shutdown_timeout_s"] == 5


def test_pages_found_by_ids_first_keep_the_lists_order_and_cover_every_row_once(setup, api, alice):
    """The paginator sorts and skips ids, then reads the page's rows by id: the rows come back in the list's order
    (team, name, id), each once, with nothing skipped between pages, and the page reads whole rows only for itself."""
    client = api(alice)
    for name in ("delta", "alpha", "echo", "charlie", "bravo", "golf", "foxtrot"):
        assert (
            client.post("/api/v1/applications/", app_body("team-a", setup.pk, name), format="json").status_code == 201
        )
    seen = []
    for page in (1, 2, 3):
        with CaptureQueriesContext(connection) as ctx:
            body = client.get(f"/api/v1/applications/?page_size=3&page={page}").json()
        seen += [a["name"] for a in body["results"]]
        wide = [q["sql"] for q in ctx.captured_queries if '"applications_application"."status"' in q["sql"]]
        assert len(wide) == 1 and "LIMIT" not in wide[0]  # whole rows are read by id, not sorted and skipped
    assert seen == ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    assert body["count"] == 7 and body["next"] is None
