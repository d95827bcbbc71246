from __future__ import annotations

import django_filters

from apps.core.filters import IdFilter

from .models import ModelEntry


class ModelEntryFilter(django_filters.FilterSet):
    application = IdFilter(field_name="application_id", help_text="Only this application's models (its id).")

    class Meta:
        model = ModelEntry
        fields = ["application"]
