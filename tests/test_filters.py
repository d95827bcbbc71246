"""List filters are declared (django-filter), so the OpenAPI schema shows them and the fuzzer sends them; a value
that cannot be an id is refused naming the parameter."""

from __future__ import annotations

import pytest
import yaml
from django.test import Client

pytestmark = pytest.mark.django_db

FILTERS = {
    "/api/v1/applications/": {"team", "cluster"},
    "/api/v1/models/": {"application"},
    "/api/v1/compaction/plans/": {"cluster"},
    "/api/v1/quotas/": {"team"},
    "/api/v1/quota-requests/": {"team", "state"},
    "/api/v1/tokens/": {"team"},
    "/api/v1/sync-runs/": {"cluster", "state"},
}


def test_every_list_filter_is_in_the_schema():
    schema = yaml.safe_load(Client().get("/api/schema/").content)
    for path, names in FILTERS.items():
        params = {p["name"]: p for p in schema["paths"][path]["get"].get("parameters", [])}
        assert names <= set(params), (path, sorted(params))
        for name in names & {"cluster", "application"}:
            assert params[name]["schema"]["type"] == "integer", (path, name)


def test_filters_filter_and_bad_ids_are_refused_naming_the_parameter(api, alice, team_a, team_b, cluster, grant):
    from tests.conftest import app_body

    grant(team_a, cluster, "2")
    client = api(alice)
    assert client.post("/api/v1/applications/", app_body("team-a", cluster.pk, "web"), format="json").status_code == 201
    assert client.get(f"/api/v1/applications/?cluster={cluster.pk}").json()["count"] == 1
    assert client.get(f"/api/v1/applications/?cluster={cluster.pk + 1}").json()["count"] == 0
    assert client.get("/api/v1/applications/?team=team-b").json()["count"] == 0
    for bad in ("abc", "0", "-1", "99999999999999999999", "1.5"):
        resp = client.get(f"/api/v1/applications/?cluster={bad}")
        assert resp.status_code == 400 and "cluster" in resp.json(), (bad, resp.content)
    resp = client.get("/api/v1/quota-requests/?state=granted")
    assert resp.status_code == 400 and "state" in resp.json()
