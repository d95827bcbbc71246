from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from apps.clusters.models import Cluster, GpuPool
from apps.teams.models import Team


class Quota(models.Model):
    """A hard limit on what a team's applications may ask for in one pool of one cluster."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quotas")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="quotas")
    pool = models.ForeignKey(GpuPool, on_delete=models.CASCADE, related_name="quotas")
    gpus = models.DecimalField(max_digits=12, decimal_places=4, validators=[MinValueValidator(Decimal("0"))])
    cpus = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "pool"], name="quota_unique_team_pool")]
        ordering = ["team__slug", "cluster__name", "pool__name"]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.gpus} in {self.pool}"
