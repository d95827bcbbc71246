"""The team page's Serve config file tab in headless Chromium: paste, see the plan, apply."""

from __future__ import annotations

import pytest

from apps.applications.models import Application
from tests.e2e.test_browser import login, page  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FILE = """applications:
  - name: fruit_app
    route_prefix: /team-a/fruit
    import_path: fruit.deployment_graph
    deployments:
      - name: MangoStand
        num_replicas: 2
        max_concurrent_queries: 4
"""


def test_paste_a_file_see_the_plan_then_apply(page, live_server, alice, team_a, cluster, grant):  # noqa: F811
    grant(team_a, cluster, "2")
    login(page, live_server, "alice")
    page.goto(f"{live_server.url}/teams/team-a/")
    page.get_by_role("link", name="Serve config file").click()
    page.get_by_label("…or paste it").fill(FILE)
    page.get_by_role("button", name="Show the plan").click()
    plan = page.locator("#plan")
    assert plan.locator('[data-app="fruit_app"][data-action="create"]').count() == 1
    assert "renamed to 'max_ongoing_requests'" in plan.inner_text()
    assert Application.objects.count() == 0  # the plan changed nothing
    page.get_by_role("button", name="Apply this plan").click()
    page.wait_for_url(f"{live_server.url}/teams/team-a/")
    assert "Applied to prod-1: 1 change(s)" in page.locator(".alert").first.inner_text()
    assert Application.objects.get().current_revision.spec["deployments"][0]["max_ongoing_requests"] == 4

    page.get_by_role("link", name="Serve config file").click()
    page.get_by_label("…or paste it").fill(FILE.replace("num_replicas: 2", "num_replicas: -1"))
    page.get_by_role("button", name="Show the plan").click()
    errors = page.locator("#file-errors").inner_text()
    assert "nothing changed" in errors and "applications[0].deployments[0].num_replicas" in errors
