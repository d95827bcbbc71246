"""Reads about teams. Who may do what in them is the request principal's (``apps.teams.principal``)."""

from __future__ import annotations

from collections.abc import Iterable

from .models import Membership, Role


def admin_emails(team_ids: Iterable[int]) -> list[str]:
    """The addresses of the admins and owners of these teams (who hear about quotas, incidents, reports)."""
    admins = Membership.objects.filter(team_id__in=list(team_ids), role__in=[Role.ADMIN, Role.OWNER])
    return sorted(set(admins.exclude(user__email="").values_list("user__email", flat=True)))
