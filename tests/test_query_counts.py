"""Every list endpoint and every page answers in a number of queries that does not grow with its rows.

Each case is measured twice, on a small world and on the same world with three times the rows (teams, members,
clusters, apps with Ray's status, sync runs, quota requests, tokens, audit events, models, plans), as the viewer
who sees the most of it. A count that grows is an N+1.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.catalog.models import ModelEntry
from apps.clusters.models import Cluster, SyncRun
from apps.clusters.services import cluster_create
from apps.compaction.models import CompactionPlan
from apps.quotas.services import quota_request_create, quota_set
from apps.teams.models import Membership, Role, Team
from apps.teams.services import issue_token, team_create
from tests.conftest import app_body

pytestmark = pytest.mark.django_db

API = [
    "/api/v1/teams/",
    "/api/v1/clusters/",
    "/api/v1/quotas/",
    "/api/v1/applications/",
    "/api/v1/sync-runs/",
    "/api/v1/quota-requests/",
    "/api/v1/tokens/",
    "/api/v1/audit-events/",
    "/api/v1/compaction/plans/",
    "/api/v1/models/",
]
PAGES = [
    "/",
    "/clusters/",
    "/clusters/{cluster}/",
    "/teams/t0/",
    "/teams/t0/members/",
    "/teams/t0/quota/",
    "/teams/t0/tokens/",
    "/teams/t0/apps/status/",
    "/quota-requests/",
    "/audit/",
    "/models/",
    "/account/tokens/",
    "/welcome/",
    "/apps/{app}/",
    "/apps/{app}/status/",
]


def _status(app: Application, nodes: list[str]) -> dict:
    return {
        "status": "RUNNING",
        "deployments": {
            "Hello": {
                "status": "HEALTHY",
                "required_resources": {"CPU": 0.1, "GPU": 0.5},
                "replicas": [
                    {"replica_id": f"r{app.pk}-{i}", "node_id": n, "state": "RUNNING"} for i, n in enumerate(nodes)
                ],
            }
        },
    }


def _grow(staff: Any, owner: Any, start: int, count: int) -> None:
    """Add ``count`` of everything, numbered from ``start``; ``owner`` owns every team (sees every team's rows)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    for i in range(start, start + count):
        cluster = cluster_create(
            actor=staff,
            data={
                "name": f"c{i}",
                "dashboard_url": f"http://127.0.0.1:{9000 + i}",
                "serve_url": "http://127.0.0.1:8000",
            },
            pools=[{"name": "gpu", "resource": "GPU", "capacity": Decimal(8)}],
        )
        Cluster.objects.filter(pk=cluster.pk).update(
            inventory_taken_at=cluster.created_at,
            nodes=[
                {"node_id": f"n{i}-{k}", "node_ip": f"10.0.{i}.{k}", "resources_total": {"GPU": 4}} for k in range(2)
            ],
        )
        team = Team.objects.filter(slug=f"t{i}").first() or team_create(actor=owner, slug=f"t{i}", name=f"T{i}")
        member = User.objects.create_user(f"m{i}", password="x-Long-passw0rd")
        Membership.objects.create(team=team, user=member, role=Role.MEMBER)
        for t in {team, Team.objects.get(slug="t0")}:
            quota_set(actor=staff, team=t, cluster=cluster, pool_name="gpu", gpus=Decimal(4))
            quota_request_create(actor=owner, team=t, cluster=cluster, pool_name="gpu", gpus=Decimal(1), reason="more")
            app = application_create(actor=owner, team=t, cluster=cluster, name=f"a{i}", spec=_spec(t.slug, i))
            Application.objects.filter(pk=app.pk).update(status=_status(app, [f"n{i}-0", f"n{i}-1"]))
            ModelEntry.objects.create(
                application=app, deployment="Hello", model_id=f"m{i}", uri=f"s3://models/m{i}", description=""
            )
        SyncRun.objects.create(cluster=cluster, generation=1, state=SyncRun.State.SUCCEEDED)
        SyncRun.objects.create(cluster=cluster, generation=2, state=SyncRun.State.FAILED, error="x")
        issue_token(user=owner, name=f"tok{i}", team=team, role=Role.ADMIN)
        CompactionPlan.objects.create(cluster=cluster, input={"nodes": [], "replicas": []})


def _spec(team: str, i: int) -> dict:
    body = app_body(team, 0, f"a{i}")
    return {k: v for k, v in body.items() if k not in ("team", "cluster", "name")}


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, HTTP_ACCEPT="text/html" if not url.startswith("/api/") else "application/json")
    assert response.status_code == 200, (url, response.status_code, response.content[:300])
    return len(ctx.captured_queries)


@pytest.fixture
def world(make_user, staff):
    owner = make_user("olivia")
    team_create(actor=owner, slug="t0", name="T0")
    _grow(staff, owner, 1, 2)
    return staff, owner


@pytest.mark.parametrize("who", ["owner", "staff"])
def test_no_list_endpoint_or_page_grows_with_its_rows(world, who):
    staff, owner = world
    user = owner if who == "owner" else staff
    client = Client()
    client.force_login(user)
    cluster = Cluster.objects.order_by("pk").first()
    staff_only = {"/api/v1/compaction/plans/", "/quota-requests/"}
    app = Application.objects.filter(team__slug="t0").order_by("pk").first()
    pages = [p.format(cluster=cluster.pk, app=app.pk) for p in PAGES]
    urls = [u for u in API + pages if user.is_staff or u not in staff_only]
    small = {url: _count(client, url) for url in urls}
    _grow(staff, owner, 3, 4)  # three times the rows
    large = {url: _count(client, url) for url in urls}
    grew = {url: (small[url], large[url]) for url in urls if large[url] > small[url]}
    print(f"\nqueries as {who} (same with 3x the rows): " + ", ".join(f"{u} {small[u]}" for u in urls))
    assert not grew, f"query counts grew with the rows (before, after): {grew}"
