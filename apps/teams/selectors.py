"""Reads about teams and who may do what in them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from .models import Membership, Role, Team, role_at_least


def teams_for(user: AbstractBaseUser) -> QuerySet[Team]:
    """Teams the user may read: all for staff, their memberships otherwise; a team token sees its team only."""
    qs = Team.objects.all() if user.is_staff else Team.objects.filter(memberships__user=user)
    token_team_id = getattr(user, "_token_team_id", None)
    if token_team_id is not None:
        qs = qs.filter(pk=token_team_id)
    return qs


def role_in(user: AbstractBaseUser, team: Team) -> str | None:
    """The user's role in the team; staff count as owners of every team. A team-scoped API token caps it."""
    token_team_id = getattr(user, "_token_team_id", None)
    if token_team_id is not None and token_team_id != team.pk:
        return None
    if user.is_staff:
        role = Role.OWNER
    else:
        role = Membership.objects.filter(team=team, user=user).values_list("role", flat=True).first()
    token_role = getattr(user, "_token_role", None)
    if role and token_role and role_at_least(role, token_role):
        return token_role
    return role


def can(user: AbstractBaseUser, team: Team, needed: str) -> bool:
    return role_at_least(role_in(user, team), needed)
