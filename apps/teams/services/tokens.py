"""API tokens: personal and team-scoped, what a principal may create, list and revoke."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.audit.services import audit_record

from ..models import (
    ROLE_RANK,
    TOKEN_PREFIX_LEN,
    ApiToken,
    Membership,
    Role,
    Team,
    hash_secret,
    role_at_least,
)
from ..principal import as_principal

User = get_user_model()


def issue_token(
    *, user: AbstractBaseUser, name: str, team: Team | None = None, role: str = "", expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Mint a token and return it with its secret, which is never stored and never shown again.

    The low-level step of ``token_create``, which checks, audits and is what every caller outside tests uses.
    """

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
    *,
    actor: Any,
    name: str,
    team: Team | None = None,
    role: str = "",
    expires_at: datetime | None = None,
    source: str = "api",
) -> tuple[ApiToken, str]:
    """A named API token, optionally scoped to one team and a role no higher than the creator's there."""

    from ..models import ROLE_RANK

    principal = as_principal(actor)
    if principal.is_scoped:
        # A scoped token mints only within its own scope: its team, as an admin there, at most its own role.
        if team is None:
            raise PermissionDenied("A team-scoped token cannot create personal tokens; use a personal token.")
        if team.pk != principal.scope_team_id or not principal.can(team, Role.ADMIN):
            raise PermissionDenied("A team-scoped token creates tokens only for its own team, as an admin there.")
    errors: dict[str, list[str]] = {}
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        errors["name"] = ["Required, at most 100 characters."]
    if team is not None:
        role = role or Role.MEMBER
        if role not in Role.values:
            errors["role"] = [f"Must be one of {', '.join(Role.values)}."]
        else:
            mine = principal.role(team)
            if mine is None or ROLE_RANK[role] > ROLE_RANK[mine]:
                errors["role"] = [f"You cannot give a token more than your own role ({mine or 'none'}) in {team.slug}."]
    elif role:
        errors["role"] = ["A role is given only with a team."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["Must be in the future."]
    if errors:
        raise ValidationError(errors)
    token, secret = issue_token(
        user=principal.user, name=name.strip(), team=team, role=role or "", expires_at=expires_at
    )
    audit_record(
        actor=principal.user,
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


def login_token_create(*, user: AbstractBaseUser, name: str, source: str) -> tuple[ApiToken, str]:
    """A personal token for a sign-in (``POST /api/v1/auth/token/``, ``servectl login --browser``): named with the
    time, expiring after ``API_LOGIN_TOKEN_TTL_DAYS``, listed and revocable like any other."""

    days = settings.API_LOGIN_TOKEN_TTL_DAYS
    expires_at = timezone.now() + timedelta(days=days) if days else None
    return token_create(
        actor=user, name=f"{name} {timezone.now():%Y-%m-%d %H:%M}", expires_at=expires_at, source=source
    )


def token_revoke(*, actor: Any, token: ApiToken, source: str = "api") -> ApiToken:

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


def tokens_manageable_by(actor: Any):
    """Tokens a principal may list and revoke. Through a session or a personal token: the user's own tokens and
    every token of the teams where the user is an admin or owner. Through a team-scoped token: itself, and (when
    it is an admin's) the team's tokens whose role is no higher than its own; never the user's personal tokens."""
    from django.db.models import Q

    from ..models import ApiToken

    principal = as_principal(actor)
    qs = ApiToken.objects.select_related("team", "user")
    if not principal.is_authenticated:
        return qs.none()
    if principal.is_scoped:
        mine = Q(pk=principal.token.pk)
        if role_at_least(principal.role_id(principal.scope_team_id), Role.ADMIN):
            rank = ROLE_RANK[principal.role_id(principal.scope_team_id)]
            roles = [r for r, n in ROLE_RANK.items() if n <= rank]
            mine |= Q(team_id=principal.scope_team_id, role__in=roles)
        return qs.filter(mine)
    admin_teams = (
        principal.team_ids(Role.ADMIN)
        if not principal.is_staff
        else list(
            Membership.objects.filter(user=principal.user, role__in=[Role.ADMIN, Role.OWNER]).values_list(
                "team_id", flat=True
            )
        )
    )
    return qs.filter(Q(user=principal.user) | Q(team_id__in=admin_teams))
