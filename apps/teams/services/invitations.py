"""Invitations (a signed link, mailed once, only its hash kept) and requests to join a team."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.links import public_url

from ..models import (
    ROLE_RANK,
    Invitation,
    JoinRequest,
    Membership,
    Role,
    Team,
    hash_secret,
)
from ..principal import as_principal
from .emails import email_mark_verified
from .memberships import check_role

User = get_user_model()


INVITATION_SALT = "teams.invitation"


class InvitationRefused(Exception):
    """The link cannot be used; the message says why, for the person holding it."""


def invitation_create(
    *, actor: Any, team: Team, email: str, role: str = Role.MEMBER, days: int = 7, source: str = "api"
) -> tuple[Invitation, str]:
    """Invite an address with a role. Returns the invitation and its link path, which is shown and mailed once and
    not kept (only a hash of its random part is)."""
    errors: dict[str, list[str]] = {}
    try:
        validate_email(email if isinstance(email, str) else "")
    except ValidationError:
        errors["email"] = ["Required: an email address."]
    if role not in Role.values:
        errors["role"] = [f"Must be one of {', '.join(Role.values)}."]
    elif role == Role.OWNER and not as_principal(actor).can(team, Role.OWNER):
        errors["role"] = ["Only an owner can invite an owner."]
    actor = as_principal(actor).user
    if errors:
        raise ValidationError(errors)
    nonce = secrets.token_urlsafe(24)
    with transaction.atomic():
        invitation = Invitation.objects.create(
            team=team,
            email=email.strip().lower(),
            role=role,
            nonce_hash=hash_secret(nonce),
            created_by=actor,
            expires_at=timezone.now() + timedelta(days=days),
        )
        audit_record(
            actor=actor,
            team=team,
            action="invitation.create",
            obj=invitation,
            after={"email": invitation.email, "role": role, "expires_at": invitation.expires_at.isoformat()},
            source=source,
        )
    path = f"/invitations/{signing.dumps({'i': invitation.pk, 'n': nonce}, salt=INVITATION_SALT, compress=True)}/"
    url = public_url(path)
    send_mail(
        f"You are invited to the team {team.slug}",
        f"{getattr(actor, 'username', 'A team admin')} invites you to join {team.name} ({team.slug}) as {role} on the "
        f"Ray Serve control plane. The link works once, until {invitation.expires_at:%Y-%m-%d %H:%M} UTC:\n\n{url}\n",
        None,
        [invitation.email],
        fail_silently=True,
    )
    return invitation, path


def invitation_check(token: str) -> Invitation:
    """The invitation a link names, if it can still be used; InvitationRefused says why not."""
    try:
        data = signing.loads(token, salt=INVITATION_SALT)
        invitation = Invitation.objects.select_related("team").get(pk=int(data["i"]))
        if not secrets.compare_digest(invitation.nonce_hash, hash_secret(str(data["n"]))):
            raise ValueError
    except (signing.BadSignature, Invitation.DoesNotExist, KeyError, TypeError, ValueError) as exc:
        raise InvitationRefused(
            "This invitation link is not valid: it was changed or cut short. Copy the whole link from the mail."
        ) from exc
    if invitation.accepted_at:
        raise InvitationRefused(
            f"This invitation to {invitation.team.slug} has already been used, on "
            f"{invitation.accepted_at:%Y-%m-%d %H:%M} UTC. An invitation works once: sign in, or ask the team's "
            "admins for a new one."
        )
    if invitation.revoked_at:
        raise InvitationRefused(f"This invitation to {invitation.team.slug} was withdrawn by the team's admins.")
    if invitation.expires_at <= timezone.now():
        raise InvitationRefused(
            f"This invitation to {invitation.team.slug} expired on {invitation.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask the team's admins for a new one."
        )
    return invitation


def invitation_accept(*, token: str, user: AbstractBaseUser, source: str = "ui") -> Membership:
    """Join the team with the invitation's role (once). A member already keeps the higher of the two roles."""
    with transaction.atomic():
        invitation = invitation_check(token)
        invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
        if invitation.accepted_at:  # accepted meanwhile, in another tab
            raise InvitationRefused(f"This invitation to {invitation.team.slug} has already been used.")
        membership = Membership.objects.filter(team=invitation.team, user=user).first()
        if membership is None:
            membership = Membership.objects.create(team=invitation.team, user=user, role=invitation.role)
        elif ROLE_RANK[Role(invitation.role)] > ROLE_RANK[Role(membership.role)]:
            membership.role = invitation.role
            membership.save(update_fields=["role"])
        invitation.accepted_at, invitation.accepted_by = timezone.now(), user
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        if (user.email or "").strip().lower() == invitation.email:
            email_mark_verified(user=user, how="invitation", source=source)  # the link came to that address
        audit_record(
            actor=user,
            team=invitation.team,
            action="invitation.accept",
            obj=invitation,
            after={"email": invitation.email, "user": user.username, "role": membership.role},
            source=source,
        )
    return membership


def invitation_revoke(*, actor: Any, invitation: Invitation, source: str = "api") -> Invitation:
    if invitation.state != "pending":
        raise ValidationError({"invitation": [f"It is {invitation.state}; only a pending invitation can be revoked."]})
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        team=invitation.team,
        action="invitation.revoke",
        obj=invitation,
        before={"email": invitation.email, "role": invitation.role},
        source=source,
    )
    return invitation


def join_request_create(
    *, user: AbstractBaseUser, team_slug: str, message: str = "", source: str = "api"
) -> JoinRequest:
    team = Team.objects.filter(slug=team_slug).first() if isinstance(team_slug, str) else None
    if team is None:
        raise ValidationError({"team": [f"No team {team_slug!r}: check the slug with someone in it."]})
    if Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"team": [f"You are already a member of {team.slug}."]})
    if not isinstance(message, str) or len(message) > 1000:
        raise ValidationError({"message": ["At most 1,000 characters."]})
    try:
        with transaction.atomic():
            req = JoinRequest.objects.create(team=team, user=user, message=message.strip())
            audit_record(actor=user, team=team, action="join_request.create", obj=req, source=source)
    except IntegrityError as exc:
        raise ValidationError({"team": [f"You already asked to join {team.slug}; its admins decide."]}) from exc
    return req


def join_request_decide(
    *, actor: Any, request: JoinRequest, approve: bool, role: str = Role.MEMBER, source: str = "api"
) -> JoinRequest:
    if request.state != JoinRequest.State.PENDING:
        raise ValidationError({"request": [f"Already {request.state}."]})
    if approve:
        role = check_role(role)
        if role == Role.OWNER and not as_principal(actor).can(request.team, Role.OWNER):
            raise ValidationError({"role": ["Only an owner can make someone an owner."]})
    actor = as_principal(actor).user
    with transaction.atomic():
        request.state = JoinRequest.State.APPROVED if approve else JoinRequest.State.REJECTED
        request.role = role if approve else ""
        request.decided_by, request.decided_at = actor, timezone.now()
        request.save()
        if approve and not Membership.objects.filter(team=request.team, user=request.user).exists():
            Membership.objects.create(team=request.team, user=request.user, role=role)
        audit_record(
            actor=actor,
            team=request.team,
            action="join_request.approve" if approve else "join_request.reject",
            obj=request,
            after={"user": request.user.username, "role": request.role},
            source=source,
        )
    return request
