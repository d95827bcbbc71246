"""Acknowledging an incident: for everyone (a team's own), or for one's own teams only (a shared one)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.audit.services import audit_record
from apps.teams.models import Role, Team
from apps.teams.principal import as_principal

from .. import shared
from ..models import Incident, IncidentAck

log = logging.getLogger(__name__)


def acknowledge(*, actor: Any, incident: Incident) -> Incident:
    """Acknowledge an incident. A team's own: for everyone (its members may). A shared (cluster) one: staff for
    everyone; a team member for their own teams with apps on the cluster only, so the others are still alerted."""
    principal = as_principal(actor)
    view = shared.view(principal, incident)
    if not view.can_ack:
        raise PermissionDenied("You need the member role in a team this incident concerns to acknowledge it.")
    if shared.is_shared(incident) and not principal.is_staff:
        names = shared.own_names_of_team
        teams = [t for t in principal.team_ids(Role.MEMBER) if names(incident, t)]
        for team_id in teams:
            _, made = IncidentAck.objects.get_or_create(
                incident=incident, team_id=team_id, defaults={"by": principal.user}
            )
            if made:
                audit_record(
                    actor=principal,
                    action="incident.acknowledge",
                    obj=incident,
                    team=Team.objects.get(pk=team_id),
                    after={"incident": incident.pk, "for_team_only": True},
                    object_repr=f"incident #{incident.pk}",
                )
        return incident
    if incident.acknowledged_at is None:
        incident.acknowledged_by = principal.user
        incident.acknowledged_at = timezone.now()
        incident.save(update_fields=["acknowledged_by", "acknowledged_at"])
        audit_record(
            actor=principal,
            action="incident.acknowledge",
            obj=incident,
            team=incident.team,
            after={"incident": incident.pk, "summary": incident.summary},
            object_repr=f"incident #{incident.pk}",
        )
    return incident
