from __future__ import annotations

import django_filters

from apps.core.filters import IdFilter

from .models import CompactionPlan


class CompactionPlanFilter(django_filters.FilterSet):
    cluster = IdFilter(field_name="cluster_id", help_text="Only this cluster's plans (its id).")

    class Meta:
        model = CompactionPlan
        fields = ["cluster"]
