from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.clusters.models import Cluster, GpuPool
from apps.core.roles import RequestState
from apps.teams.models import Team


class StarterGrant(models.Model):
    """One per cluster (``cluster.starter_grant``): the quota every new team gets there. A cluster part: the API
    shows these among the cluster's fields."""

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, primary_key=True, related_name="starter_grant")
    starter_pool = models.CharField(
        max_length=50, blank=True, help_text="Pool of the starter grant every new team gets here (empty: none)."
    )
    starter_gpus = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("0"),
        validators=[MinValueValidator(Decimal("0"))],
        help_text="GPUs of the starter grant, e.g. 0.5 (0: no starter grant).",
    )
    starter_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Lifetime of a starter grant in days (empty: it does not end)."
    )

    class Meta:
        verbose_name = "starter grant"

    def __str__(self) -> str:
        return f"starter grant of cluster {self.cluster_id}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.starter_gpus and not self.starter_pool:
            raise ValidationError({"starter_pool": "Required when starter_gpus is more than 0."})


class Quota(models.Model):
    """A hard limit on what a team's applications may ask for in one pool of one cluster."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quotas")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="quotas")
    pool = models.ForeignKey(GpuPool, on_delete=models.CASCADE, related_name="quotas")
    gpus = models.DecimalField(max_digits=12, decimal_places=4, validators=[MinValueValidator(Decimal("0"))])
    cpus = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    starter = models.BooleanField(default=False, help_text="Granted at the team's creation by the cluster's grant.")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When a starter grant ends: then growth is refused, nothing is torn down."
    )
    ended_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "pool"], name="quota_unique_team_pool")]
        ordering = ["team__slug", "cluster__name", "pool__name"]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.gpus} in {self.pool}"

    def ended(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class QuotaRequest(models.Model):
    """A team asks for a quota in a pool; a platform admin approves (which sets the quota) or rejects."""

    State = RequestState

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="quota_requests")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="quota_requests")
    pool = models.ForeignKey(GpuPool, on_delete=models.CASCADE, related_name="quota_requests")
    gpus = models.DecimalField(max_digits=12, decimal_places=4, validators=[MinValueValidator(Decimal("0"))])
    cpus = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))]
    )
    reason = models.TextField(max_length=2000)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="quota_requests_made"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="quota_requests_decided",
    )
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.team.slug} asks {self.gpus} in {self.pool} ({self.state})"


class AdmissionRefusal(models.Model):
    """A write refused by quota admission: kept for the alert that tells the team (the write itself changed nothing)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="admission_refusals")
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="admission_refusals")
    actor_label = models.CharField(max_length=150, blank=True)
    reasons = models.JSONField(default=list)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
