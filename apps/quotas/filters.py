from __future__ import annotations

import django_filters

from .models import Quota, QuotaRequest


class QuotaFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only this team's quotas (its slug).")

    class Meta:
        model = Quota
        fields = ["team"]


class QuotaRequestFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only this team's requests (its slug).")
    state = django_filters.ChoiceFilter(choices=QuotaRequest.State.choices, help_text="Only requests in this state.")

    class Meta:
        model = QuotaRequest
        fields = ["team", "state"]
