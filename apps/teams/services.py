from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from rest_framework.exceptions import ValidationError

from apps.audit.services import audit_record

from .models import SLUG_RE, Membership, Role, Team

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
    from .selectors import role_in

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
