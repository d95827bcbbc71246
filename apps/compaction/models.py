from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.clusters.models import Cluster


class CompactionSettings(models.Model):
    """One per cluster (``cluster.compaction_settings``): whether and when plans run, and the GCS address used to
    drain nodes. A cluster part: the API shows these among the cluster's fields."""

    class Policy(models.TextChoices):
        OFF = "off", "Off"
        SUGGEST = "suggest", "Suggest plans"
        AUTOMATIC = "automatic", "Automatic"

    cluster = models.OneToOneField(
        Cluster, on_delete=models.CASCADE, primary_key=True, related_name="compaction_settings"
    )
    gcs_address = models.CharField(
        max_length=200, blank=True, help_text="Ray GCS address (host:port) for draining nodes during compaction."
    )
    compaction_policy = models.CharField(max_length=10, choices=Policy.choices, default=Policy.SUGGEST)
    compaction_threshold = models.PositiveIntegerField(
        default=1, help_text="Automatic compaction runs when at least this many nodes could be freed."
    )
    compaction_window = models.CharField(
        max_length=11, blank=True, help_text='UTC hours when automatic compaction may run, e.g. "01:00-05:00".'
    )

    class Meta:
        verbose_name = "compaction settings"
        verbose_name_plural = "compaction settings"

    def __str__(self) -> str:
        return f"compaction settings of cluster {self.cluster_id}"


class CompactionPlan(models.Model):
    class State(models.TextChoices):
        PLANNED = "planned", "Planned"
        EXECUTING = "executing", "Executing"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="compaction_plans")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PLANNED)
    trigger = models.CharField(max_length=12, default="manual")  # manual | suggest | automatic
    input = models.JSONField(help_text="The planner's input: nodes and replicas as observed.")
    nodes_to_drain = models.JSONField(default=list)
    moves = models.JSONField(default=list)
    freed = models.JSONField(default=dict)
    gpus_freed = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal(0))
    gpu_hours_per_day = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal(0))
    observed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    drain_method = models.CharField(
        max_length=8, blank=True, help_text="How the nodes were drained: job (through the dashboard) or gcs."
    )
    drain_job = models.CharField(max_length=64, blank=True, help_text="The Ray job that drained the nodes.")
    outcome = models.JSONField(
        default=dict,
        blank=True,
        help_text="After execution: per replica, planned against actual placement; moves made; time per node.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"compaction #{self.pk} on {self.cluster} ({self.state})"


class CompactionStep(models.Model):
    """Draining one node: recorded before it starts, updated while it runs."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DRAINING = "draining", "Draining"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    plan = models.ForeignKey(CompactionPlan, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    node_id = models.CharField(max_length=64)
    replicas = models.JSONField(default=list, help_text="Replicas on the node when planned.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["plan", "index"]
        constraints = [models.UniqueConstraint(fields=["plan", "index"], name="compaction_step_unique_index")]

    def __str__(self) -> str:
        return f"step {self.index} of plan {self.plan_id}: {self.node_id[:12]} {self.state}"
