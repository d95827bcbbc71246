"""Invitations (a signed link that expires and works once) and join requests, through the API and the pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.teams.models import Invitation, JoinRequest, Membership

pytestmark = pytest.mark.django_db


def invite(api, admin, slug: str = "team-a", email: str = "new.person@example.com", role: str = "admin") -> dict:
    resp = api(admin).post(f"/api/v1/teams/{slug}/invitations/", {"email": email, "role": role}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def test_an_admin_invites_the_link_is_mailed_and_only_a_hash_is_kept(api, alice, team_a, bob):
    body = invite(api, alice)
    assert body["state"] == "pending" and body["role"] == "admin" and "/invitations/" in body["url"]
    token = body["url"].rstrip("/").rsplit("/", 1)[1]
    assert len(mail.outbox) == 1 and body["url"].split("/invitations/")[1] in mail.outbox[0].body
    stored = Invitation.objects.get()
    assert token not in str(stored.__dict__)  # neither the link nor its random part is stored
    listed = api(alice).get("/api/v1/teams/team-a/invitations/").json()
    assert [i["email"] for i in listed] == ["new.person@example.com"] and "url" not in listed[0]
    assert AuditEvent.objects.filter(action="invitation.create").count() == 1
    assert token not in str(list(AuditEvent.objects.values("before", "after")))
    # Refusals name the field and change nothing; a non-admin cannot invite.
    bad = api(alice).post("/api/v1/teams/team-a/invitations/", {"email": "nope", "role": "boss"}, format="json")
    assert bad.status_code == 400 and {"email", "role"} <= set(bad.json())
    assert api(bob).post("/api/v1/teams/team-a/invitations/", {"email": "x@y.z"}, format="json").status_code == 404
    assert Invitation.objects.count() == 1


def test_accepting_signs_up_and_joins_with_the_role_once(api, alice, team_a):
    path = invite(api, alice)["url"].split("testserver")[-1]
    anonymous = Client()
    page = anonymous.get(path)
    assert page.status_code == 200 and "Create the account and join" in page.content.decode()
    joined = anonymous.post(path, {"username": "newperson", "password": "a-long-password-1"})
    assert joined.status_code == 302 and joined["Location"] == "/teams/team-a/"
    m = Membership.objects.get(team=team_a, user__username="newperson")
    assert m.role == "admin" and m.user.email == "new.person@example.com"
    assert anonymous.get("/teams/team-a/").status_code == 200  # signed in
    again = Client().get(path)
    assert again.status_code == 410 and "has already been used" in again.content.decode()
    assert AuditEvent.objects.filter(action="invitation.accept").count() == 1
    assert AuditEvent.objects.filter(action="user.signup", object_repr="newperson").count() == 1


def test_signing_up_through_an_invitation_follows_the_sign_up_rules(api, alice, team_a, make_user):
    """The same rules as the sign-up page: Django's password validators, and one account per address."""
    path = invite(api, alice)["url"].split("testserver")[-1]
    weak = Client().post(path, {"username": "newperson", "password": "password"})
    assert weak.status_code == 400 and "too common" in weak.content.decode()
    make_user("someone", email="new.person@example.com")  # the address got an account meanwhile
    taken = Client().post(path, {"username": "newperson", "password": "a-long-password-1"})
    assert taken.status_code == 400 and "already exists" in taken.content.decode()
    assert not Membership.objects.filter(team=team_a, user__username__in=["newperson", "someone"]).exists()


def test_expired_revoked_and_tampered_links_are_refused_with_a_clear_page(api, alice, team_a, bob):
    expired = invite(api, alice, email="late@example.com")["url"].split("testserver")[-1]
    Invitation.objects.filter(email="late@example.com").update(expires_at=timezone.now() - timedelta(minutes=1))
    page = Client().get(expired)
    assert page.status_code == 410 and "expired on" in page.content.decode()
    revoked = invite(api, alice, email="gone@example.com")
    assert api(alice).delete(f"/api/v1/teams/team-a/invitations/{revoked['id']}/").status_code == 204
    page = Client().get(revoked["url"].split("testserver")[-1])
    assert page.status_code == 410 and "withdrawn" in page.content.decode()
    fine = invite(api, alice, email="fine@example.com")["url"].split("testserver")[-1]
    tampered = re.sub(r"/invitations/(.)", lambda m: "/invitations/" + ("A" if m.group(1) != "A" else "B"), fine)
    page = Client().get(tampered)
    assert page.status_code == 410 and "not valid" in page.content.decode()
    # A signed-in user accepts with the button; the invitation's role is given.
    client = Client()
    client.force_login(bob)
    assert client.post(fine).status_code == 302
    assert Membership.objects.get(team=team_a, user=bob).role == "admin"


def test_a_member_asks_to_join_and_an_admin_approves_with_a_role(api, alice, team_a, make_user):
    carol = make_user("carol")
    asked = api(carol).post(
        "/api/v1/join-requests/", {"team": "team-a", "message": "I run the search models"}, format="json"
    )
    assert asked.status_code == 201, asked.content
    again = api(carol).post("/api/v1/join-requests/", {"team": "team-a"}, format="json")
    assert again.status_code == 400 and "already asked" in str(again.json()["team"])
    unknown = api(carol).post("/api/v1/join-requests/", {"team": "no-such"}, format="json")
    assert unknown.status_code == 400 and "team" in unknown.json()
    page = Client()
    page.force_login(alice)
    assert "I run the search models" in page.get("/teams/team-a/members/").content.decode()
    req = JoinRequest.objects.get()
    resp = page.post(f"/teams/team-a/join-requests/{req.pk}/approve/", {"role": "viewer"})
    assert resp.status_code == 302
    assert Membership.objects.get(team=team_a, user=carol).role == "viewer"
    mine = api(carol).get("/api/v1/join-requests/").json()
    assert mine[0]["state"] == "approved" and mine[0]["role"] == "viewer"
    assert AuditEvent.objects.filter(action="join_request.approve").count() == 1
