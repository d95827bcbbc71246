"""Reads of the audit log: who may see which events, and the filters of the list and the page."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_datetime

from apps.core.roles import Role

from .models import AuditEvent


def audit_events_for(principal: Any) -> QuerySet[AuditEvent]:
    """Staff see everything; a team's admins and owners see its events; others see nothing. ``principal`` is the
    request principal (apps.teams.principal): a viewer-scoped token of an admin sees nothing."""
    if principal.is_staff:
        return AuditEvent.objects.all()
    return AuditEvent.objects.filter(team_id__in=principal.team_ids(Role.ADMIN))


def filter_events(qs: QuerySet[AuditEvent], params: Any) -> QuerySet[AuditEvent]:
    if params.get("team"):
        qs = qs.filter(team_slug=params["team"])
    if params.get("action"):
        qs = qs.filter(action__startswith=params["action"])
    if params.get("actor"):
        qs = qs.filter(actor_label=params["actor"])
    if params.get("object_type"):
        qs = qs.filter(object_type=params["object_type"])
    if params.get("q"):
        q = params["q"]
        qs = qs.filter(Q(object_repr__icontains=q) | Q(request_id=q))
    for key, op in (("since", "gte"), ("until", "lt")):
        if params.get(key):
            value: datetime | None = parse_datetime(params[key])
            if value is None:
                raise ValidationError({key: ["Must be an ISO 8601 date-time, e.g. 2026-11-21T10:00:00Z."]})
            qs = qs.filter(**{f"at__{op}": value})
    return qs
