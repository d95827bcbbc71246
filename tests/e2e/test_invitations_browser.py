"""Invitations in headless Chromium: an admin invites from the members page; the link, opened in a second browser
context (another person), creates an account and joins with the chosen role; reused and expired links are refused
with a clear page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.teams.models import Invitation, Membership
from tests.e2e.test_browser import login, page  # noqa: F401 - the page fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_invitation_joins_a_second_browser_with_the_role_and_works_once(page, live_server, alice, team_a):  # noqa: F811
    login(page, live_server, "alice")
    page.goto(f"{live_server.url}/teams/team-a/members/")
    page.get_by_label("Email address").fill("dana@example.com")
    page.locator("#id_invite_role").select_option("admin")
    page.get_by_role("button", name="Send invitation").click()
    notice = page.locator(".alert", has_text="Invitation sent to dana@example.com as admin").inner_text()
    link = re.search(r"(http://\S+/invitations/\S+/)", notice).group(1)
    assert page.locator("tr.invitation[data-state=pending]").count() == 1

    other = page.context.browser.new_context()  # another person, no session
    try:
        guest = other.new_page()
        guest.goto(link)
        assert guest.locator("#invited-role").inner_text() == "admin"
        guest.get_by_label("Username").fill("dana")
        guest.get_by_label("Password", exact=True).fill("dana-long-password-1")
        guest.get_by_role("button", name="Create the account and join").click()
        guest.wait_for_url(f"{live_server.url}/teams/team-a/")
        assert "Welcome to team-a: you are admin." in guest.content()
        assert Membership.objects.get(team=team_a, user__username="dana").role == "admin"

        guest.goto(link)  # the same link again
        assert "has already been used" in guest.locator("#invitation-refused").inner_text()
    finally:
        other.close()

    page.reload()
    assert page.locator("tr.invitation[data-state=accepted]", has_text="dana").count() == 1
    # An expired link: a clear page too.
    page.get_by_label("Email address").fill("late@example.com")
    page.get_by_role("button", name="Send invitation").click()
    late = re.search(r"(http://\S+/invitations/\S+/)", page.locator(".alert", has_text="late@").inner_text()).group(1)
    Invitation.objects.filter(email="late@example.com").update(expires_at=timezone.now() - timedelta(hours=1))
    third = page.context.browser.new_context()
    try:
        p3 = third.new_page()
        resp = p3.goto(late)
        assert resp.status == 410
        assert "expired on" in p3.locator("#invitation-refused").inner_text()
        assert p3.get_by_role("button", name="Create the account and join").count() == 0
    finally:
        third.close()
