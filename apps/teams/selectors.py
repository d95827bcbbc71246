"""Reads about teams and who may do what in them."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from .models import Membership, Role, Team, role_at_least


def admin_emails(team_ids: Iterable[int]) -> list[str]:
    """The addresses of the admins and owners of these teams (who hear about quotas, incidents, reports)."""
    admins = Membership.objects.filter(team_id__in=list(team_ids), role__in=[Role.ADMIN, Role.OWNER])
    return sorted(set(admins.exclude(user__email="").values_list("user__email", flat=True)))


def teams_for(user: AbstractBaseUser) -> QuerySet[Team]:
    """Teams the user may read: all for staff, their memberships otherwise; a team token sees its team only."""
    qs = Team.objects.all() if user.is_staff else Team.objects.filter(memberships__user=user)
    token_team_id = getattr(user, "_token_team_id", None)
    if token_team_id is not None:
        qs = qs.filter(pk=token_team_id)
    return qs


def role_in(user: AbstractBaseUser, team: Team) -> str | None:
    """The user's role in the team; staff count as owners of every team. A team-scoped API token caps it."""
    return roles_in(user, [team])[team.pk]


def roles_in(user: AbstractBaseUser, teams: Iterable[Team]) -> dict[int, str | None]:
    """``role_in`` for many teams in one query (team id -> role or None)."""
    teams = list(teams)
    if user.is_staff:
        roles: dict[int, str] = {t.pk: Role.OWNER for t in teams}
    else:
        rows = Membership.objects.filter(user=user, team__in=[t.pk for t in teams]).values_list("team_id", "role")
        roles = dict(rows)
    token_team_id = getattr(user, "_token_team_id", None)
    token_role = getattr(user, "_token_role", None)
    out: dict[int, str | None] = {}
    for t in teams:
        role = roles.get(t.pk)
        if token_team_id is not None and token_team_id != t.pk:
            role = None
        elif role and token_role and role_at_least(role, token_role):
            role = token_role
        out[t.pk] = role
    return out


def can(user: AbstractBaseUser, team: Team, needed: str) -> bool:
    return role_at_least(role_in(user, team), needed)
