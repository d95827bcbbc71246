"""A new team gets every cluster's starter grant in the transaction that creates it. Teams sit below quotas, so
the team service cannot call the quota service; this receiver is the one place that joins them."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from apps.teams.models import Team

from .services import grant_starter


@receiver(post_save, sender=Team, dispatch_uid="quotas.starter_grant")
def team_created(sender: type[Team], instance: Team, created: bool, raw: bool = False, **_: Any) -> None:
    if created and not raw:
        grant_starter(instance)
