"""Single sign-on below the protocol: what a verified ID token's claims do to users, teams and staff, the
configuration checks, sign-up turned off, and the command-line client's browser sign-in. The protocol itself
(discovery, PKCE, state, nonce, signatures, expiry) is tested against a real provider in
tests/e2e/test_sso_browser.py."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from apps.audit.models import AuditEvent
from apps.sso.config import parse_group_teams
from apps.sso.models import SsoIdentity
from apps.sso.services import SignInRefused, sign_in
from apps.teams.models import ApiToken, Membership, Role, VerifiedEmail
from apps.teams.services import invitation_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ISSUER = "https://login.corp.example"


@pytest.fixture
def mapping(settings):
    settings.OIDC_ISSUER = ISSUER
    settings.OIDC_CLIENT_ID = "cp"
    settings.OIDC_CLIENT_SECRET = "s"
    settings.OIDC_GROUP_TEAMS = "ml=team-a:admin, ml-read=team-a:viewer, owners=team-b:owner"
    settings.OIDC_STAFF_GROUP = "platform"


def claims(sub: str = "u1", groups: list | None = None, **extra):
    return {"sub": sub, "email": f"{sub}@corp.example", "email_verified": True, "groups": groups or [], **extra}


def verified(user):
    """The user opened the link mailed to their address (what linking at the provider requires)."""
    VerifiedEmail.objects.create(user=user, email=user.email, how="link")
    return user


def test_group_mapping_parses_and_names_the_bad_entry():
    rules = parse_group_teams(" ml = team-a : admin ,x=y")
    assert [(r.group, r.team, r.role) for r in rules] == [("ml", "team-a", "admin"), ("x", "y", "member")]
    with pytest.raises(ValueError, match="'ml' is not group=team"):
        parse_group_teams("ml")
    with pytest.raises(ValueError, match="role must be one of"):
        parse_group_teams("ml=team-a:god")


def test_the_first_sign_in_creates_the_user_and_the_highest_mapped_role_wins(mapping, team_a, team_b):
    user, changes, first = sign_in(issuer=ISSUER, claims=claims(groups=["ml-read", "ml", "unrelated"]))
    assert first and not user.has_usable_password() and user.username == "u1"
    assert Membership.objects.get(user=user, team=team_a).role == Role.ADMIN
    assert not Membership.objects.filter(user=user, team=team_b).exists()
    assert changes == ["joined team-a as admin"]
    again, _, first = sign_in(issuer=ISSUER, claims=claims(groups=["ml"]))
    assert again == user and not first
    assert get_user_model().objects.filter(email="u1@corp.example").count() == 1
    page = Client()
    page.force_login(team_a.memberships.get(role=Role.OWNER).user)
    members = page.get("/teams/team-a/members/").content.decode()
    assert members.count("from a group") == 1 and 'data-member="u1"' in members


def test_hand_made_memberships_are_left_alone_and_the_last_owner_stays(mapping, team_a, team_b, alice):
    # alice has her own account (password, address verified) and owns team-a; she signs in through the provider.
    verified(alice)
    user, changes, _ = sign_in(issuer=ISSUER, claims=claims("alice-sub", ["ml-read", "owners"], email=alice.email))
    assert user == alice  # linked by the verified email
    assert Membership.objects.get(user=alice, team=team_a).role == Role.OWNER  # made by hand: not lowered
    assert Membership.objects.get(user=alice, team=team_b).role == Role.OWNER  # made by the mapping
    Membership.objects.filter(team=team_b).exclude(user=alice).delete()  # she is team-b's only owner now
    _, changes, _ = sign_in(issuer=ISSUER, claims=claims("alice-sub", [], email=alice.email))
    assert Membership.objects.get(user=alice, team=team_b).role == Role.OWNER  # kept: a team needs an owner
    assert Membership.objects.get(user=alice, team=team_a).role == Role.OWNER


def test_an_unverified_email_that_matches_an_account_is_refused(mapping, alice):
    with pytest.raises(SignInRefused, match="not verified"):
        sign_in(issuer=ISSUER, claims=claims("x", email=alice.email, email_verified=False))
    assert not SsoIdentity.objects.exists()


def test_an_email_handed_to_another_person_does_not_open_the_first_ones_account(mapping, alice):
    verified(alice)
    assert sign_in(issuer=ISSUER, claims=claims("alice-sub", email=alice.email))[0] == alice
    with pytest.raises(SignInRefused, match="already linked to another person"):
        sign_in(issuer=ISSUER, claims=claims("someone-else", email=alice.email))
    assert SsoIdentity.objects.get().subject == "alice-sub"


def test_staff_follows_the_group_but_a_superuser_keeps_the_admin(mapping, make_user):
    user, changes, _ = sign_in(issuer=ISSUER, claims=claims(groups=["platform"]))
    assert user.is_staff and "platform staff" in changes
    user, changes, _ = sign_in(issuer=ISSUER, claims=claims(groups=[]))
    assert not user.is_staff and "no longer platform staff" in changes
    root = verified(make_user("root", is_staff=True, is_superuser=True, email="root@corp.example"))
    # an admin's account is never opened by a sign-in at the provider, verified address or not ...
    with pytest.raises(SignInRefused, match="platform admin account"):
        sign_in(issuer=ISSUER, claims=claims("root-sub", [], email="root@corp.example"))
    # ... a platform admin links it; then the superuser keeps the admin whatever the groups say
    SsoIdentity.objects.create(user=root, issuer=ISSUER, subject="root-sub")
    user, _, _ = sign_in(issuer=ISSUER, claims=claims("root-sub", [], email="root@corp.example"))
    assert user == root and user.is_staff
    assert AuditEvent.objects.filter(action="user.staff").count() == 2


def test_a_password_account_squatting_an_address_is_never_linked_to_the_real_person(mapping, make_user, settings):
    """The takeover the review proved: someone signs up with a password and another person's address (never
    verified); the real person's first sign-in at the company provider must not open that account, whose owner
    would then carry the person's groups (staff, team roles)."""
    settings.OIDC_GROUP_TEAMS = "owners=team-b:owner"
    squatter = make_user("mallory", email="victim@corp.example")
    victim, changes, first = sign_in(
        issuer=ISSUER, claims=claims("victim-sub", ["platform", "owners"], email="victim@corp.example")
    )
    assert first and victim != squatter and victim.is_staff
    squatter.refresh_from_db()
    assert not squatter.is_staff and squatter.email == "" and not squatter.memberships.exists()
    assert victim.email == "victim@corp.example" and VerifiedEmail.objects.filter(user=victim, how="sso").exists()
    released = AuditEvent.objects.get(action="user.email_released")
    assert released.object_id == str(squatter.pk)
    # the squatter's session and password open only the squatter's own, powerless account
    c = Client()
    assert c.login(username="mallory", password=PASSWORD)
    assert c.get("/api/v1/clusters/1/serve-config/").status_code in (403, 404)


def test_a_sign_up_address_is_verified_by_the_mailed_link_and_then_links(mapping, mailoutbox, settings):
    settings.PASSWORD_SIGNUP = True
    c = Client()
    resp = c.post(
        "/accounts/signup/",
        {"username": "dana", "email": "dana@corp.example", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert resp.status_code == 302
    dana = get_user_model().objects.get(username="dana")
    assert not VerifiedEmail.objects.filter(user=dana).exists()
    link = next(line for line in mailoutbox[-1].body.splitlines() if "/accounts/verify-email/" in line).strip()
    path = link[link.index("/accounts/") :]
    assert Client().get(path[:-5] + "xxxx/").status_code == 400  # an altered link proves nothing
    assert b"is confirmed as yours" in Client().get(path).content
    assert VerifiedEmail.objects.filter(user=dana, email="dana@corp.example", how="link").exists()
    assert sign_in(issuer=ISSUER, claims=claims("dana-sub", email="dana@corp.example"))[0] == dana


def test_accepting_an_invitation_at_its_address_verifies_it(mapping, team_a, alice):
    from apps.teams.services import invitation_accept, invitation_create

    _, path = invitation_create(actor=alice, team=team_a, email="erin@corp.example", role=Role.MEMBER)
    erin = get_user_model().objects.create_user(username="erin", email="erin@corp.example", password=PASSWORD)
    invitation_accept(token=path.split("/")[2], user=erin)
    assert VerifiedEmail.objects.filter(user=erin, how="invitation").exists()
    assert sign_in(issuer=ISSUER, claims=claims("erin-sub", email="erin@corp.example"))[0] == erin


def test_a_deactivated_account_cannot_sign_in(mapping):
    user, _, _ = sign_in(issuer=ISSUER, claims=claims())
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(SignInRefused, match="deactivated"):
        sign_in(issuer=ISSUER, claims=claims())


def test_a_half_configured_sign_on_fails_the_checks(settings):
    settings.OIDC_ISSUER = "https://login.corp.example"
    settings.OIDC_CLIENT_ID = ""
    settings.OIDC_GROUP_TEAMS = "broken"
    with pytest.raises(SystemCheckError) as exc:
        call_command("check")
    text = str(exc.value)
    assert "OIDC_CLIENT_ID is required" in text and "OIDC_CLIENT_SECRET is required" in text
    assert "'broken' is not group=team" in text


def test_with_password_sign_up_off_nobody_signs_up_with_a_password(settings, alice, team_a):
    settings.PASSWORD_SIGNUP = False
    c = Client()
    page = c.get("/accounts/signup/")
    assert page.status_code == 403 and b"Sign-up with a password is turned off" in page.content
    posted = c.post(
        "/accounts/signup/",
        {"username": "x", "email": "x@corp.example", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert posted.status_code == 403
    _, path = invitation_create(actor=alice, team=team_a, email="new@corp.example", role="member")
    assert b"signup-form" not in c.get(path).content
    refused = c.post(path, {"username": "new", "password": PASSWORD})
    assert refused.status_code == 400 and b"turned off" in refused.content
    assert not get_user_model().objects.filter(username__in=["x", "new"]).exists()


def test_the_sso_pages_are_absent_when_sign_on_is_off(settings):
    settings.OIDC_ISSUER = ""
    c = Client()
    assert c.get("/accounts/oidc/login/").status_code == 404
    assert c.get("/accounts/oidc/callback/?state=x&code=y").status_code == 404
    assert b"sso-login" not in c.get("/accounts/login/").content


def test_servectl_browser_sign_in_is_allowed_once_and_collected_once(alice):
    anon = Client()
    started = anon.post("/api/v1/auth/cli-login/").json()
    collect = f"/api/v1/auth/cli-login/{started['id']}/token/"
    assert anon.post(collect, {"poll_secret": started["poll_secret"]}).status_code == 202
    assert anon.post(collect, {"poll_secret": "guess"}).status_code == 410  # the secret only the client holds
    page = Client()
    assert page.get(f"/cli-login/{started['id']}/").status_code == 302  # sign in first
    page.force_login(alice)
    shown = page.get(f"/cli-login/{started['id']}/")
    # the page never shows the code (a phished person would only press Allow): it asks for it, and says where from
    assert started["user_code"].encode() not in shown.content and b"Code from your terminal" in shown.content
    assert b'id="cli-login-from">127.0.0.1<' in shown.content
    assert not ApiToken.objects.filter(user=alice).exists()  # nothing minted before it is collected
    assert page.post(f"/cli-login/{started['id']}/", {"decision": "allow"}).status_code == 400  # no code
    assert anon.post(collect, {"poll_secret": started["poll_secret"]}).status_code == 202  # still waiting
    page.post(f"/cli-login/{started['id']}/", {"decision": "allow", "code": started["user_code"].lower()})
    token = anon.post(collect, {"poll_secret": started["poll_secret"]}).json()["token"]
    assert ApiToken.objects.get(user=alice, team=None).prefix == token[:8]
    assert Client().get("/api/v1/teams/", HTTP_AUTHORIZATION=f"Token {token}").status_code == 200
    assert anon.post(collect, {"poll_secret": started["poll_secret"]}).status_code == 410  # once
    assert page.get(f"/cli-login/{started['id']}/").status_code == 410


def test_servectl_browser_sign_in_denied(alice):
    anon = Client()
    started = anon.post("/api/v1/auth/cli-login/").json()
    page = Client()
    page.force_login(alice)
    page.post(f"/cli-login/{started['id']}/", {"decision": "deny"})
    gone = anon.post(f"/api/v1/auth/cli-login/{started['id']}/token/", {"poll_secret": started["poll_secret"]})
    assert gone.status_code == 410 and "denied" in gone.json()["detail"]
    assert not ApiToken.objects.filter(user=alice).exists()


def test_servectl_browser_sign_in_cannot_be_phished_with_a_button(alice):
    """Someone else starts a sign-in and sends alice the link: pressing Allow gives them nothing; guessing codes
    denies the sign-in after five tries."""
    anon = Client()
    started = anon.post("/api/v1/auth/cli-login/").json()
    collect = f"/api/v1/auth/cli-login/{started['id']}/token/"
    page = Client()
    page.force_login(alice)
    for tries_left in (4, 3, 2, 1):
        wrong = page.post(f"/cli-login/{started['id']}/", {"decision": "allow", "code": "AAAA-AAAA"})
        assert wrong.status_code == 400 and f"{tries_left} tries left".encode() in wrong.content
    assert page.post(f"/cli-login/{started['id']}/", {"decision": "allow", "code": "BBBB-BBBB"}).status_code == 410
    # the right code is too late now: the sign-in was denied, and nothing was minted
    assert (
        page.post(f"/cli-login/{started['id']}/", {"decision": "allow", "code": started["user_code"]}).status_code
        == 410
    )
    assert anon.post(collect, {"poll_secret": started["poll_secret"]}).status_code == 410
    assert not ApiToken.objects.filter(user=alice).exists()


def test_claims_as_other_providers_send_them(mapping, alice, team_a):
    """Cognito's email_verified as the string "true"; Keycloak's groups as paths; a single group as a string."""
    verified(alice)
    user, _, _ = sign_in(issuer=ISSUER, claims=claims("c-sub", email=alice.email, email_verified="true"))
    assert user == alice
    user, changes, _ = sign_in(issuer=ISSUER, claims=claims("k-sub", groups=["/ml", "/platform"]))
    assert Membership.objects.get(user=user, team=team_a).role == Role.ADMIN and user.is_staff
    user, _, _ = sign_in(issuer=ISSUER, claims={**claims("k-sub"), "groups": "/ml-read"})
    assert Membership.objects.get(user=user, team=team_a).role == Role.VIEWER and not user.is_staff
