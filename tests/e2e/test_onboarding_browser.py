"""The self-service path with a password and a quota request in headless Chromium: sign up to a running app, with a
platform admin's approval (the path for more than the starter grant; the unaided one is test_unaided_onboarding)."""

from __future__ import annotations

import re

import pytest

from apps.applications.models import Application
from apps.quotas.models import Quota
from apps.teams.models import ApiToken
from tests.conftest import PASSWORD
from tests.e2e.test_browser import CHROMIUM_ARGS, login, page  # noqa: F401 - the page fixture

pytestmark = [pytest.mark.ray, pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sign_up_to_a_running_app(page, live_server, ray_env, staff):  # noqa: F811
    base = live_server.url
    page.goto(f"{base}/accounts/signup/")
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Email").fill("dana@example.com")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Password confirmation").fill("short")
    page.get_by_role("button", name="Sign up").click()
    assert "too short" in page.locator("body").inner_text()  # Django's password validators
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/welcome/")
    assert page.locator('[data-step="1"]').get_attribute("data-done") == "false"

    # 1. Create a team.
    page.get_by_role("link", name="choose the slug").click()
    page.get_by_label("Slug").fill("dana-ml")
    page.get_by_label("Display name").fill("Dana's ML team")
    page.get_by_role("button", name="Create team").click()
    page.wait_for_url(f"{base}/welcome/")
    assert page.locator('[data-step="1"]').get_attribute("data-done") == "true"

    # 2. Request quota; a platform admin approves it in their own session.
    page.get_by_role("link", name="Request quota").click()
    page.get_by_label("GPUs in total").fill("1.5")
    page.get_by_label("Reason").fill("first model")
    page.get_by_role("button", name="Send request").click()
    assert "a platform admin decides" in page.locator(".alert").first.inner_text()
    admin = page.context.browser.new_context().new_page()
    login(admin, live_server, staff.username)
    admin.goto(f"{base}/quota-requests/")
    card = admin.locator('.pending-request[data-team="dana-ml"]')
    card.get_by_label("Comment for the team").fill("welcome aboard")
    card.get_by_role("button", name="Approve").click()
    assert "approved" in admin.locator(".alert").first.inner_text()
    assert Quota.objects.get(team__slug="dana-ml").gpus == 1.5
    page.reload()
    assert page.locator('.quota-request[data-state="approved"]').count() == 1
    assert "welcome aboard" in page.locator(".quota-request").first.inner_text()

    # 3. Create a token, shown once.
    page.goto(f"{base}/welcome/")
    page.get_by_role("link", name="Create a token").click()
    page.get_by_label("Name").fill("ci")
    page.get_by_role("button", name="Create").click()
    secret = page.locator("#token-secret").input_value()
    assert ApiToken.objects.get(name="ci").prefix == secret[:8]

    # 4. Deploy the template app; 5. see it running.
    page.goto(f"{base}/welcome/")
    page.get_by_role("link", name="edit it first").click()
    assert page.get_by_label("Import path").input_value() == "examples.hello:app"
    page.get_by_label("Application name").fill("first")
    page.get_by_label("Route prefix").fill("/dana-ml/first")
    page.locator("#dep-0-num_gpus").fill("0.5")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(r".*/apps/\d+/$"))
    page.locator('#app-status[data-polling="false"] [data-state="running"]').wait_for(timeout=90_000)
    page.goto(f"{base}/welcome/")
    assert page.locator('[data-step="5"]').get_attribute("data-done") == "true"
    assert "All done" in page.locator("main").inner_text()
    assert Application.objects.get(name="first").state == "running"
