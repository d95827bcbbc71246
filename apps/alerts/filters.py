from __future__ import annotations

import django_filters

from apps.core.filters import IdFilter

from .kinds import KIND_CHOICES
from .models import AlertRule, Incident


class IncidentFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only this team's incidents (its slug).")
    application = IdFilter(field_name="application_id", help_text="Only this application's incidents (its id).")
    cluster = IdFilter(field_name="cluster_id", help_text="Only this cluster's incidents (its id).")
    rule = django_filters.ChoiceFilter(field_name="kind", choices=KIND_CHOICES, help_text="Only this kind of rule.")
    state = django_filters.ChoiceFilter(choices=Incident.State.choices, help_text="open or resolved.")

    class Meta:
        model = Incident
        fields = ["team", "application", "cluster", "rule", "state"]


class AlertRuleFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only this team's rules (its slug).")
    application = IdFilter(field_name="application_id")
    cluster = IdFilter(field_name="cluster_id")
    kind = django_filters.ChoiceFilter(choices=KIND_CHOICES)

    class Meta:
        model = AlertRule
        fields = ["team", "application", "cluster", "kind"]
