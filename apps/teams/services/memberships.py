"""Who is in a team, with which role; only an owner grants the owner role, and the last owner stays."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from apps.audit.services import audit_record

from ..models import (
    Membership,
    Role,
    Team,
)
from ..principal import Principal, as_principal

User = get_user_model()


def _find_user(identifier: Any) -> Any:
    if not isinstance(identifier, str) or not identifier:
        raise ValidationError({"username": ["Required: a username or an email address."]})
    user = User.objects.filter(username=identifier).first() or User.objects.filter(email__iexact=identifier).first()
    if user is None:
        raise ValidationError({"username": [f"No user {identifier!r}."]})
    return user


def check_role(role: Any) -> str:
    if role not in Role.values:
        raise ValidationError({"role": [f"Must be one of {', '.join(Role.values)}."]})
    return role


def _owner_rule(actor: Principal, team: Team, *roles: str) -> None:
    """Only an owner grants, changes or removes the owner role."""
    if Role.OWNER in roles and not actor.can(team, Role.OWNER):
        raise PermissionDenied(f"Only an owner of {team.slug} grants, changes or removes the owner role.")


def membership_add(*, actor: Any, team: Team, username: str, role: str, source: str = "api") -> Membership:
    actor = as_principal(actor)
    user = _find_user(username)
    role = check_role(role)
    _owner_rule(actor, team, role)
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
def membership_change(*, actor: Any, membership: Membership, role: str, source: str = "api") -> Membership:
    actor = as_principal(actor)
    role = check_role(role)
    before = membership.role
    _owner_rule(actor, membership.team, role, before)
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
    actor = as_principal(actor)
    _owner_rule(actor, membership.team, membership.role)
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
