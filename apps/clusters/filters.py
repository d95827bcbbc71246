from __future__ import annotations

import django_filters

from apps.core.filters import IdFilter

from .models import SyncRun


class SyncRunFilter(django_filters.FilterSet):
    cluster = IdFilter(field_name="cluster_id", help_text="Only this cluster's pushes (its id).")
    state = django_filters.ChoiceFilter(choices=SyncRun.State.choices, help_text="Only pushes in this state.")

    class Meta:
        model = SyncRun
        fields = ["cluster", "state"]
