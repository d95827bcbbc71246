"""Who sees which incidents and rules. ``principal`` is the request principal (apps.teams.principal)."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from apps.applications.models import Application
from apps.teams.principal import Principal

from .models import AlertRule, Incident, IncidentAck, WebhookEndpoint


def visible_incidents(principal: Principal) -> QuerySet[Incident]:
    """Staff: all. Others: their teams' incidents and those of clusters their teams run applications on (each
    read through apps.alerts.shared, which keeps a shared incident's other teams' parts out)."""
    qs = Incident.objects.select_related("team", "application", "cluster", "rule", "acknowledged_by")
    if principal.is_staff:
        return qs
    teams = principal.team_ids()
    clusters = Application.objects.filter(team_id__in=teams, deleted_at__isnull=True).values("cluster_id")
    return qs.filter(Q(team_id__in=teams) | Q(team__isnull=True, cluster_id__in=clusters))


def unacknowledged(principal: Principal, qs: QuerySet[Incident]) -> QuerySet[Incident]:
    """Incidents nobody acknowledged for the principal: not staff, and not one of its teams (a shared one)."""
    qs = qs.filter(acknowledged_at__isnull=True)
    if principal.is_staff:
        return qs
    acked = IncidentAck.objects.filter(incident=OuterRef("pk"), team_id__in=principal.team_ids())
    return qs.exclude(Exists(acked))


def visible_rules(principal: Principal) -> QuerySet[AlertRule]:
    """Defaults and cluster rules for everyone; team and application rules for the team's readers."""
    return principal.restrict_or_shared(AlertRule.objects.select_related("team", "application", "cluster"))


def open_count(principal: Principal) -> int:
    return unacknowledged(principal, visible_incidents(principal).filter(state=Incident.State.OPEN)).count()


def disabled_webhooks(team_ids: list[int]) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(team_id__in=team_ids, enabled=False)
