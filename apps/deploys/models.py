"""What the deploys app keeps per cluster: its drift policy, what it last pushed, and the leases of its workers."""

from __future__ import annotations

from django.db import models


class PushState(models.Model):
    """One per cluster (``cluster.push_state``); registered as a cluster part, so the API shows its policy and
    generation among the cluster's fields."""

    class DriftPolicy(models.TextChoices):
        REPAIR = "repair", "Repair (re-push the desired config)"
        FLAG = "flag", "Flag only"

    cluster = models.OneToOneField(
        "clusters.Cluster", on_delete=models.CASCADE, primary_key=True, related_name="push_state"
    )
    drift_policy = models.CharField(max_length=10, choices=DriftPolicy.choices, default=DriftPolicy.REPAIR)

    # The push: every write bumps the cluster's desired_generation; a push records what it sent.
    pushed_generation = models.PositiveBigIntegerField(default=0)
    last_pushed_hash = models.CharField(max_length=64, blank=True)
    last_failed_hash = models.CharField(max_length=64, blank=True, help_text="A config Ray refused: not retried.")
    drift_repair_hash = models.CharField(max_length=64, blank=True)
    drift_repairs = models.PositiveIntegerField(default=0, help_text="Repair pushes of drift_repair_hash so far.")

    # Background work holds leases: one pusher and one status poller per cluster at a time.
    lock_owner = models.CharField(max_length=64, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    poll_token = models.CharField(max_length=32, blank=True)
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    poll_requests = models.PositiveBigIntegerField(default=0, help_text="Bumped by each push the poller must follow.")

    class Meta:
        verbose_name = "push state"

    def __str__(self) -> str:
        return f"push state of cluster {self.cluster_id}"
