"""Reads for applications: the ones a user may see, by id."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.core.ids import parse_id
from apps.teams.selectors import teams_for

from .models import Application


def visible_applications(user: Any) -> QuerySet[Application]:
    """Applications of the teams the user may read (deleted ones included until they are gone)."""
    return Application.objects.filter(team__in=teams_for(user))


def visible_application(user: Any, value: Any, *, live: bool = False) -> Application | None:
    """The application a user-given id names, if the user may see it (``live``: not being deleted); else None."""
    pk = parse_id(value)
    if not pk:
        return None
    qs = visible_applications(user).select_related("team", "cluster", "current_revision", "deployed_revision")
    if live:
        qs = qs.filter(deleted_at__isnull=True)
    return qs.filter(pk=pk).first()
