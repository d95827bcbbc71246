from __future__ import annotations

import django_filters

from .models import ApiToken


class TokenFilter(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", help_text="Only tokens of this team (its slug).")

    class Meta:
        model = ApiToken
        fields = ["team"]
