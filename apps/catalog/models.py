from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.applications.models import Application


class ModelEntry(models.Model):
    """A model served by a multiplexed deployment. The catalog reaches the app through user_config."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="models")
    deployment = models.CharField(max_length=100)
    model_id = models.CharField(max_length=200)
    uri = models.CharField(max_length=1000)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["application_id", "deployment", "model_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "deployment", "model_id"], name="model_unique_per_deployment"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_id} ({self.deployment})"
