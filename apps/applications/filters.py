from __future__ import annotations

import django_filters

from apps.core.filters import IdFilter

from .models import Application


class ApplicationFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only this team's applications (its slug).")
    cluster = IdFilter(field_name="cluster_id", help_text="Only applications on this cluster (its id).")

    class Meta:
        model = Application
        fields = ["team", "cluster"]
