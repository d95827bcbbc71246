"""Teams: create, rename, delete (owners)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from apps.audit.services import audit_record

from ..models import (
    SLUG_RE,
    Membership,
    Role,
    Team,
)
from ..principal import as_principal


def team_create(*, actor: Any, slug: str, name: str, source: str = "api") -> Team:

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


def team_update(*, actor: Any, team: Team, name: str, source: str = "api") -> Team:
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
    if not as_principal(actor).can(team, Role.OWNER):
        raise PermissionDenied(f"Only an owner of {team.slug} deletes it.")
    if team.applications.exists():  # (the reverse of Application.team: teams sit below applications)
        raise ValidationError({"team": ["Delete the team's applications first."]})
    audit_record(actor=actor, team=None, action="team.delete", obj=team, before={"slug": team.slug}, source=source)
    team.delete()
