"""Headless Chromium (Debian's) driven by Playwright against the live dashboard, real Ray and a real worker."""

from __future__ import annotations

import os
import shutil

import pytest

from apps.applications.models import Application
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.ray, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (see .ci/run)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop here
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        page.screenshot(path=str(tmp_path / "last.png"))
        browser.close()


def login(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_log_in_create_an_app_through_the_form_and_see_it_running(page, live_server, ray_env, alice, team_a, grant):
    grant(team_a, ray_env, "2")
    login(page, live_server, "alice")
    page.get_by_role("link", name="team-a").click()
    page.get_by_role("link", name="Deploy the first one").click()

    # A bad name is refused with the error next to the field, and the other values are kept.
    page.get_by_label("Application name").fill("Not Valid")
    page.get_by_label("Route prefix").fill("/team-a/web")
    page.get_by_role("button", name="Deploy").click()
    assert "letters, digits" in page.locator("#err_name").inner_text()
    assert page.get_by_label("Route prefix").input_value() == "/team-a/web"
    assert Application.objects.count() == 0

    page.get_by_label("Application name").fill("web")
    page.locator("#dep-0-num_gpus").fill("0.5")
    page.get_by_role("button", name="Deploy").click()
    page.wait_for_url("**/apps/*/")
    assert "created" in page.locator(".alert").first.inner_text()
    # htmx polls the status fragment until the app settles; then polling stops.
    page.locator('#app-status[data-polling="false"] [data-state="running"]').wait_for(timeout=90_000)
    app = Application.objects.get(name="web")
    assert app.state == "running"
    assert app.current_revision.spec["deployments"][0]["ray_actor_options"] == {"num_cpus": 0.1, "num_gpus": 0.5}
    node_id = app.status["deployments"]["Hello"]["replicas"][0]["node_id"]
    assert node_id[:12] in page.locator("#app-status").inner_text()  # replica placement is shown
