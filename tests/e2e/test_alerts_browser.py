"""The alert pages in headless Chromium: the navbar badge (htmx), the incident list and detail, acknowledging, and a
team admin's rule override with a refused value named by field."""

from __future__ import annotations

import re

import pytest

from apps.alerts import services
from apps.alerts.models import AlertRule, Incident
from tests.e2e.test_browser import login, page  # noqa: F401 - the page fixture
from tests.test_alerts import make_app, set_state

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_incident_is_seen_in_the_badge_opened_acknowledged_and_a_rule_overridden(
    page,  # noqa: F811
    live_server,
    alice,
    team_a,
    cluster,
    grant,
    settings,
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    services.ensure_default_rules()
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    set_state(app, "deploy_failed", "ImportError: no module named llm")
    assert services.evaluate().opened == 1
    incident = Incident.objects.get()

    login(page, live_server, "alice")
    badge = page.locator("#incident-badge .badge")
    badge.wait_for()  # loaded by htmx after the page
    assert badge.inner_text() == "1"
    page.locator("#incident-badge").click()
    page.wait_for_url(re.compile(r".*/incidents/$"))
    row = page.locator('.incident-row[data-kind="app_failed"]')
    assert row.count() == 1 and "DEPLOY_FAILED" in row.inner_text()
    row.get_by_role("link", name=re.compile("DEPLOY_FAILED")).click()
    page.wait_for_url(re.compile(rf".*/incidents/{incident.pk}/$"))
    # the cause on its own line, readable; the whole evidence folded below it
    assert "ImportError: no module named llm" in page.locator("#evidence-fields").inner_text()
    assert not page.locator("#evidence").is_visible()
    page.get_by_text("All the evidence, as recorded").click()
    assert page.locator("#evidence").is_visible() and '"ray_status"' in page.locator("#evidence").inner_text()
    page.get_by_role("button", name="Acknowledge").click()
    page.wait_for_url(re.compile(rf".*/incidents/{incident.pk}/$"))
    assert page.get_by_role("button", name="Acknowledge").count() == 0
    incident.refresh_from_db()
    assert incident.acknowledged_by == alice
    with page.expect_response(re.compile(r".*/incidents/badge/$")) as answer:
        page.goto(f"{live_server.url}/")
    assert answer.value.ok
    page.wait_for_load_state("networkidle")
    assert page.locator("#incident-badge").count() == 1
    assert page.locator("#incident-badge .badge").count() == 0  # acknowledged: nothing left to look at

    # The condition clears: the list's default (open) is empty, and "all" shows it resolved.
    set_state(app, "running")
    assert services.evaluate().resolved == 1
    page.goto(f"{live_server.url}/incidents/")
    assert "No open incidents" in page.locator("#no-incidents").inner_text()
    page.locator("#f-state").select_option("all")
    page.get_by_role("button", name="Filter").click()
    assert "resolved" in page.locator('.incident-row[data-kind="app_failed"]').inner_text()

    # A team admin overrides the idle-GPU rule for their team; a value out of bounds is refused, naming the field.
    page.goto(f"{live_server.url}/alert-rules/")
    form = page.get_by_role("form", name="Override idle_gpu for a team")
    form.get_by_label("window (seconds)").fill("5")
    form.get_by_role("button", name="Add override").click()
    assert "window_s" in page.locator("#rule-errors").inner_text()
    assert not AlertRule.objects.filter(team=team_a, kind="idle_gpu").exists()
    form = page.get_by_role("form", name="Override idle_gpu for a team")
    form.get_by_label("window (seconds)").fill("600")
    form.get_by_role("button", name="Add override").click()
    rule = AlertRule.objects.get(team=team_a, kind="idle_gpu")
    assert rule.params["window_s"] == 600
    assert "team-a" in page.locator("#kind-idle_gpu").inner_text()
