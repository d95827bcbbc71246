"""Single sign-on through a real OpenID provider process (panva/oidc-provider on Node), in headless Chromium.

Nothing here is mocked: the browser signs in at the provider's own login form, the control plane exchanges the code
at the provider's token endpoint and checks the ID token against the provider's published keys. The reverse proxy
in front of the provider (tests/support/oidc_provider.py) plays the network: it passes everything through, except
when a test makes it alter or hold back the token endpoint's answer.
"""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent
from apps.sso.models import SsoIdentity
from apps.teams.models import Membership, Role
from tests.e2e.conftest import ACCOUNTS, SECRET
from tests.e2e.test_browser import page  # noqa: F401 - the page fixture
from tests.support.oidc_provider import Provider

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in_at_provider(tab, live_server, login: str, password: str) -> None:
    tab.goto(f"{live_server.url}/accounts/login/")
    tab.get_by_role("link", name="Sign in with Corp SSO").click()
    tab.get_by_label("Username").fill(login)
    tab.get_by_label("Password").fill(password)
    tab.get_by_role("button", name="Sign in").click()


def test_sign_in_creates_the_user_maps_groups_again_at_every_sign_in_and_logs_out_at_the_provider(
    page,  # noqa: F811
    live_server,
    sso,
    make_team,
    bob,
):
    platform = make_team("platform", bob)
    make_team("search", bob)
    sso.set_accounts({**ACCOUNTS, "erin": {**ACCOUNTS["erin"], "groups": ["ml-platform", "search", "cp-admins"]}})
    authorize = []
    page.on("request", lambda r: authorize.append(r.url) if "/auth?" in r.url else None)

    # A wrong password is the provider's business: it refuses and nothing reaches the control plane.
    sign_in_at_provider(page, live_server, "erin", "wrong")
    assert "Wrong username or password" in page.locator("body").inner_text()
    assert not get_user_model().objects.filter(email="erin@corp.example").exists()
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill("erin-pass-123")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/welcome/")

    # The authorization request carried state, nonce and a PKCE S256 challenge (the provider requires PKCE).
    query = parse_qs(urlparse(authorize[0]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["state"][0] and query["nonce"][0]
    assert "Signed in as erin through Corp SSO" in page.locator(".alert").first.inner_text()

    erin = get_user_model().objects.get(email="erin@corp.example")
    assert not erin.has_usable_password()
    assert SsoIdentity.objects.get(user=erin).subject == "erin"
    assert Membership.objects.get(user=erin, team=platform).role == Role.ADMIN
    assert Membership.objects.get(user=erin, team__slug="search").role == Role.MEMBER  # the role defaults to member
    assert erin.is_staff
    assert "Working in platform" in page.locator("main").inner_text()

    # Log out: the control plane's session ends, and so does the provider's (it asks once more, then returns).
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(re.compile(rf"{live_server.url}/accounts/login/(\?.*)?$"))
    page.goto(f"{live_server.url}/welcome/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")

    # The directory changes: erin leaves ml-platform and cp-admins, joins ml-readers. The next sign-in (which asks
    # for the password again: the provider's session ended) re-applies the mapping.
    sso.set_accounts({**ACCOUNTS, "erin": {**ACCOUNTS["erin"], "groups": ["ml-readers"]}})
    sign_in_at_provider(page, live_server, "erin", "erin-pass-123")
    page.wait_for_url(f"{live_server.url}/welcome/")
    erin.refresh_from_db()
    assert Membership.objects.get(user=erin, team=platform).role == Role.VIEWER
    assert not Membership.objects.filter(user=erin, team__slug="search").exists()
    assert not erin.is_staff
    assert get_user_model().objects.filter(email="erin@corp.example").count() == 1
    text = page.locator(".alert").first.inner_text()
    assert "now viewer in platform" in text and "left search" in text and "no longer platform staff" in text
    actions = set(AuditEvent.objects.filter(source="sso").values_list("action", flat=True))
    assert {"user.signup", "user.sso_link", "membership.add", "membership.change", "membership.remove"} <= actions


def test_a_tampered_an_expired_and_a_replayed_answer_are_refused(page, live_server, sso, settings):  # noqa: F811
    User = get_user_model()  # noqa: N806

    # Someone between the provider and the control plane adds the staff group to the ID token: the signature no
    # longer matches the payload, so the control plane refuses it.
    sso.tamper = {"groups": ["cp-admins"]}
    sign_in_at_provider(page, live_server, "newbie", "newbie-pass-123")
    page.locator("#sso-refused").wait_for()
    assert "signature does not verify" in page.locator("#sso-refused").inner_text()
    assert sso.token_answers  # the token endpoint was reached and answered
    assert not User.objects.filter(email="newbie@corp.example").exists()
    page.goto(f"{live_server.url}/welcome/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")

    # A short-lived ID token (1 s at this client) that arrives 3 s late, with no clock leeway: expired.
    sso.tamper = None
    settings.OIDC_CLIENT_ID = "controlplane-short"
    settings.OIDC_CLOCK_SKEW_S = 0
    sso.delay_s = 3.0
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_role("link", name="Sign in with Corp SSO").click()  # the provider's session remembers newbie
    page.locator("#sso-refused").wait_for()
    assert "expired" in page.locator("#sso-refused").inner_text()
    assert not User.objects.filter(email="newbie@corp.example").exists()

    # The same client with no delay signs in, which shows the refusals above were the token's and nothing else.
    sso.delay_s = 0.0
    callbacks = []
    page.on("request", lambda r: callbacks.append(r.url) if "/accounts/oidc/callback/" in r.url else None)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_role("link", name="Sign in with Corp SSO").click()
    page.wait_for_url(f"{live_server.url}/welcome/")
    assert User.objects.filter(email="newbie@corp.example").exists()

    # Replaying the provider's redirect (code and state) in the same browser: the state was used up.
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(re.compile(rf"{live_server.url}/accounts/login/(\?.*)?$"))
    page.goto(callbacks[-1])
    assert "state does not match" in page.locator("#sso-refused").inner_text()
    page.goto(f"{live_server.url}/welcome/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    refused = AuditEvent.objects.filter(action="user.sso_refused").count()
    assert refused == 3


def test_with_password_sign_up_off_the_pages_send_people_to_the_provider(page, live_server, sso, settings):  # noqa: F811
    settings.PASSWORD_SIGNUP = False
    page.goto(f"{live_server.url}/accounts/login/")
    assert page.get_by_role("link", name="Create an account").count() == 0
    page.goto(f"{live_server.url}/accounts/signup/")
    assert "Sign-up with a password is turned off" in page.locator("#signup-closed").inner_text()
    page.get_by_role("link", name="Sign in with Corp SSO").click()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("newbie-pass-123")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/welcome/")


def test_an_invitation_is_accepted_through_the_provider(page, live_server, sso, settings, alice, team_a):  # noqa: F811
    from apps.teams.services import invitation_create

    settings.PASSWORD_SIGNUP = False
    _, path = invitation_create(actor=alice, team=team_a, email="newbie@corp.example", role="admin")
    page.goto(f"{live_server.url}{path}")
    assert page.locator("#signup-form").count() == 0  # no password sign-up offered
    page.get_by_role("link", name="Sign in with Corp SSO to accept").click()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("newbie-pass-123")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}{path}")  # back on the invitation, signed in
    page.get_by_role("button", name="Join team-a as admin").click()
    page.wait_for_url(f"{live_server.url}/teams/team-a/")
    newbie = get_user_model().objects.get(email="newbie@corp.example")
    assert Membership.objects.get(user=newbie, team=team_a).role == Role.ADMIN
    assert not newbie.has_usable_password()


def test_claims_only_in_userinfo_and_keycloak_group_paths_still_map(
    page,  # noqa: F811
    live_server,
    sso,
    settings,
    tmp_path,
    make_team,
    bob,
):
    """oidc-provider's default (as several real providers do): email and groups only from the UserInfo endpoint,
    not in the ID token; and groups as Keycloak sends them, as paths (``/ml-platform``)."""
    make_team("platform", bob)
    accounts = {"kim": {"password": "kim-pass-1234", "email": "kim@corp.example", "groups": ["/ml-platform"]}}
    conforming = Provider(
        [
            {
                "client_id": "controlplane",
                "client_secret": SECRET,
                "redirect_uris": [f"{live_server.url}/accounts/oidc/callback/"],
            }
        ],
        accounts,
        {},
        tmp_path,
        conform_id_token_claims=True,
    )
    try:
        settings.OIDC_ISSUER = conforming.issuer
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_role("link", name="Sign in with Corp SSO").click()
        page.get_by_label("Username").fill("kim")
        page.get_by_label("Password").fill("kim-pass-1234")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live_server.url}/welcome/")
        id_token = conforming.token_answers[-1]["id_token"].split(".")[1]
        in_id_token = json.loads(base64.urlsafe_b64decode(id_token + "=" * (-len(id_token) % 4)))
        assert "groups" not in in_id_token and "email" not in in_id_token  # only UserInfo has them
    finally:
        conforming.stop()
    kim = get_user_model().objects.get(email="kim@corp.example")
    assert Membership.objects.get(user=kim, team__slug="platform").role == Role.ADMIN
