from __future__ import annotations

import re
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.audit.services import audit_record
from apps.core.links import public_url

from .models import (
    ROLE_RANK,
    SLUG_RE,
    Invitation,
    JoinRequest,
    Membership,
    Role,
    Team,
    hash_secret,
    role_at_least,
)
from .selectors import role_in

User = get_user_model()


def team_create(*, actor: Any, slug: Any, name: Any, source: str = "api") -> Team:

    errors = {}
    if not isinstance(slug, str) or not re.match(SLUG_RE, slug) or len(slug) > 30:
        errors["slug"] = ["Required: lowercase letters, digits and single hyphens, at most 30 characters."]
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors["name"] = ["Required, at most 100 characters."]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            team = Team.objects.create(slug=slug, name=name.strip(), created_by=actor)
            Membership.objects.create(team=team, user=actor, role=Role.OWNER)
            audit_record(
                actor=actor,
                team=team,
                action="team.create",
                obj=team,
                after={"slug": slug, "name": name},
                source=source,
            )
    except IntegrityError as exc:
        raise ValidationError({"slug": [f"A team with slug {slug!r} already exists."]}) from exc
    return team


def team_update(*, actor: Any, team: Team, name: Any, source: str = "api") -> Team:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValidationError({"name": ["Required, at most 100 characters."]})
    before = {"name": team.name}
    team.name = name.strip()
    team.save(update_fields=["name"])
    audit_record(
        actor=actor, team=team, action="team.update", obj=team, before=before, after={"name": team.name}, source=source
    )
    return team


def team_delete(*, actor: Any, team: Team, source: str = "api") -> None:
    if team.applications.exists():  # (the reverse of Application.team: teams sit below applications)
        raise ValidationError({"team": ["Delete the team's applications first."]})
    audit_record(actor=actor, team=None, action="team.delete", obj=team, before={"slug": team.slug}, source=source)
    team.delete()


def _find_user(identifier: Any) -> Any:
    if not isinstance(identifier, str) or not identifier:
        raise ValidationError({"username": ["Required: a username or an email address."]})
    user = User.objects.filter(username=identifier).first() or User.objects.filter(email__iexact=identifier).first()
    if user is None:
        raise ValidationError({"username": [f"No user {identifier!r}."]})
    return user


def _check_role(role: Any) -> str:
    if role not in Role.values:
        raise ValidationError({"role": [f"Must be one of {', '.join(Role.values)}."]})
    return role


def membership_add(*, actor: Any, team: Team, username: Any, role: Any, source: str = "api") -> Membership:
    user = _find_user(username)
    role = _check_role(role)
    if Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"username": [f"{user.username} is already a member of {team.slug}."]})
    m = Membership.objects.create(team=team, user=user, role=role)
    audit_record(
        actor=actor,
        team=team,
        action="membership.add",
        obj=m,
        after={"user": user.username, "role": role},
        source=source,
    )
    return m


@transaction.atomic
def membership_change(*, actor: Any, membership: Membership, role: Any, source: str = "api") -> Membership:
    role = _check_role(role)
    before = membership.role
    if before == Role.OWNER and role != Role.OWNER:
        _ensure_other_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor,
        team=membership.team,
        action="membership.change",
        obj=membership,
        before={"role": before},
        after={"role": role},
        source=source,
    )
    return membership


@transaction.atomic
def membership_remove(*, actor: Any, membership: Membership, source: str = "api") -> None:
    if membership.role == Role.OWNER:
        _ensure_other_owner(membership)
    audit_record(
        actor=actor,
        team=membership.team,
        action="membership.remove",
        obj=membership,
        before={"user": membership.user.username, "role": membership.role},
        source=source,
    )
    membership.delete()


def _ensure_other_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(team=membership.team, role=Role.OWNER)
    if not owners.exclude(pk=membership.pk).exists():
        raise ValidationError({"role": ["A team needs at least one owner; make someone else owner first."]})


def issue_token(*, user: Any, name: str, team: Any = None, role: str = "", expires_at: Any = None) -> tuple[Any, str]:
    """Mint a token and return it with its secret, which is never stored and never shown again.

    The low-level step of ``token_create``, which checks, audits and is what every caller outside tests uses.
    """
    from .models import TOKEN_PREFIX_LEN, ApiToken, hash_secret

    while True:
        secret = ApiToken.generate_secret()
        if not ApiToken.objects.filter(prefix=secret[:TOKEN_PREFIX_LEN]).exists():
            break
    token = ApiToken.objects.create(
        user=user,
        team=team,
        role=role,
        name=name,
        prefix=secret[:TOKEN_PREFIX_LEN],
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    return token, secret


def token_create(
    *, actor: Any, name: Any, team: Team | None = None, role: Any = "", expires_at: Any = None, source: str = "api"
) -> tuple[Any, str]:
    """A named API token, optionally scoped to one team and a role no higher than the creator's there."""
    from django.utils import timezone

    from .models import ROLE_RANK

    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors["name"] = ["Required, at most 100 characters."]
    if team is not None:
        role = role or Role.MEMBER
        if role not in Role.values:
            errors["role"] = [f"Must be one of {', '.join(Role.values)}."]
        else:
            mine = role_in(actor, team)
            if mine is None or ROLE_RANK[role] > ROLE_RANK[mine]:
                errors["role"] = [f"You cannot give a token more than your own role ({mine or 'none'}) in {team.slug}."]
    elif role:
        errors["role"] = ["A role is given only with a team."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["Must be in the future."]
    if errors:
        raise ValidationError(errors)
    token, secret = issue_token(user=actor, name=name.strip(), team=team, role=role or "", expires_at=expires_at)
    audit_record(
        actor=actor,
        team=team,
        action="token.create",
        obj=token,
        source=source,
        after={
            "name": token.name,
            "prefix": token.prefix,
            "role": token.role,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return token, secret


def login_token_create(*, user: Any, name: str, source: str) -> tuple[Any, str]:
    """A personal token for a sign-in (``POST /api/v1/auth/token/``, ``servectl login --browser``): named with the
    time, expiring after ``API_LOGIN_TOKEN_TTL_DAYS``, listed and revocable like any other."""
    from django.utils import timezone

    days = settings.API_LOGIN_TOKEN_TTL_DAYS
    expires_at = timezone.now() + timedelta(days=days) if days else None
    return token_create(
        actor=user, name=f"{name} {timezone.now():%Y-%m-%d %H:%M}", expires_at=expires_at, source=source
    )


def token_revoke(*, actor: Any, token: Any, source: str = "api") -> Any:
    from django.utils import timezone

    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            team=token.team,
            action="token.revoke",
            obj=token,
            after={"prefix": token.prefix},
            source=source,
        )
    return token


def tokens_manageable_by(user: Any):
    """The user's own tokens, and every token of the teams where the user is an admin or owner."""
    from django.db.models import Q

    from .models import ApiToken

    admin_teams = Membership.objects.filter(user=user, role__in=[Role.ADMIN, Role.OWNER]).values("team_id")
    return ApiToken.objects.filter(Q(user=user) | Q(team_id__in=admin_teams)).select_related("team", "user")


# ---- invitations and join requests ---------------------------------------------------------------------------------

INVITATION_SALT = "teams.invitation"


class InvitationRefused(Exception):
    """The link cannot be used; the message says why, for the person holding it."""


def invitation_create(
    *, actor: Any, team: Team, email: Any, role: Any = Role.MEMBER, days: int = 7, source: str = "api"
) -> tuple[Invitation, str]:
    """Invite an address with a role. Returns the invitation and its link path, which is shown and mailed once and
    not kept (only a hash of its random part is)."""
    errors: dict[str, list[str]] = {}
    try:
        validate_email(email if isinstance(email, str) else "")
    except DjangoValidationError:
        errors["email"] = ["Required: an email address."]
    if role not in Role.values:
        errors["role"] = [f"Must be one of {', '.join(Role.values)}."]
    elif role == Role.OWNER and not role_at_least(role_in(actor, team), Role.OWNER):
        errors["role"] = ["Only an owner can invite an owner."]
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


def invitation_accept(*, token: str, user: Any, source: str = "ui") -> Membership:
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


def join_request_create(*, user: Any, team_slug: Any, message: Any = "", source: str = "api") -> JoinRequest:
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
    *, actor: Any, request: JoinRequest, approve: bool, role: Any = Role.MEMBER, source: str = "api"
) -> JoinRequest:
    if request.state != JoinRequest.State.PENDING:
        raise ValidationError({"request": [f"Already {request.state}."]})
    if approve:
        role = _check_role(role)
        if role == Role.OWNER and not role_at_least(role_in(actor, request.team), Role.OWNER):
            raise ValidationError({"role": ["Only an owner can make someone an owner."]})
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
