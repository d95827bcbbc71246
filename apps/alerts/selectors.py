"""Who sees which incidents and rules."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from apps.applications.models import Application
from apps.teams.selectors import teams_for

from .models import AlertRule, Incident, WebhookEndpoint


def visible_incidents(user: Any) -> QuerySet[Incident]:
    """Staff: all. Others: their teams' incidents and those of clusters their teams run applications on."""
    qs = Incident.objects.select_related("team", "application", "cluster", "rule", "acknowledged_by")
    if user.is_staff and getattr(user, "_token_team_id", None) is None:
        return qs
    teams = teams_for(user)
    clusters = Application.objects.filter(team__in=teams, deleted_at__isnull=True).values("cluster_id")
    return qs.filter(Q(team__in=teams) | Q(team__isnull=True, cluster_id__in=clusters))


def visible_rules(user: Any) -> QuerySet[AlertRule]:
    """Defaults and cluster rules for everyone; team and application rules for the team's readers."""
    qs = AlertRule.objects.select_related("team", "application", "cluster")
    if user.is_staff and getattr(user, "_token_team_id", None) is None:
        return qs
    return qs.filter(Q(team__isnull=True) | Q(team__in=teams_for(user)))


def open_count(user: Any) -> int:
    return visible_incidents(user).filter(state=Incident.State.OPEN, acknowledged_at__isnull=True).count()


def disabled_webhooks(team_ids: list[int]) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(team_id__in=team_ids, enabled=False)
