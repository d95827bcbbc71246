"""A canary rollout of an application: from its running revision to a new one, traffic split by weight in steps,
each step judged by health gates (see ``services`` for the phases and ``placement`` for what runs on Ray)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.applications.models import Application, Revision

# Anyscale's default steps: the share of requests (percent) the new version gets at each step.
DEFAULT_STEPS = [5, 10, 20, 30, 50, 75, 100]
DEFAULT_STEP_SECONDS = 300
DEFAULT_GATES = {
    "max_error_rate_increase": 0.01,  # the new version's 5xx share may exceed the old one's by this much
    "max_p95_ratio": 1.5,  # ... and its p95 latency the old one's by this factor
    "p95_slack_ms": 50.0,  # ... or by this many milliseconds, whichever is more (fast apps jitter)
    "min_requests": 20,  # a verdict needs this many requests to the new version in the step
}
DEADLINE_MINUTES = 120  # a rollout not finished by then rolls back (as Anyscale's do)


class Rollout(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        SUCCEEDED = "succeeded", "Succeeded"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ABORTED = "aborted", "Aborted"

    class Phase(models.TextChoices):
        START = "start", "Starting the new version"
        SPLIT = "split", "Splitting traffic"
        PROMOTE = "promote", "Promoting the new version"
        RESTORE = "restore", "Restoring one version at the route"
        DONE = "done", "Done"

    ACTIVE = (State.RUNNING, State.PAUSED)
    ENDED = (State.SUCCEEDED, State.ROLLED_BACK, State.ABORTED)

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="rollouts")
    from_revision = models.ForeignKey(Revision, on_delete=models.RESTRICT, related_name="+")
    to_revision = models.ForeignKey(Revision, on_delete=models.RESTRICT, related_name="+")
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING)
    phase = models.CharField(max_length=8, choices=Phase.choices, default=Phase.START)
    steps = models.JSONField(default=list, help_text="The new version's share of requests (percent) at each step.")
    step_seconds = models.PositiveIntegerField(default=DEFAULT_STEP_SECONDS)
    gates = models.JSONField(default=dict)
    step_index = models.IntegerField(default=-1, help_text="The step under way; -1 before the first.")
    weight = models.FloatField(default=0, help_text="The new version's share of requests now (percent).")
    promoted = models.BooleanField(default=False, help_text="Whether the new version is the one that stays.")
    verdicts = models.JSONField(default=list, blank=True, help_text="The gates' verdict at each step, in order.")
    reason = models.TextField(blank=True, help_text="Why the rollout ended as it did.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    deadline_at = models.DateTimeField()
    step_started_at = models.DateTimeField(null=True, blank=True)
    phase_changed_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True, help_text="When the outcome was decided.")
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When one version alone held the route again.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["application"], condition=~Q(phase="done"), name="rollout_one_per_app")
        ]
        indexes = [models.Index(fields=["phase"])]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.application_id}: r{self.from_revision_id} -> r{self.to_revision_id}"

    @property
    def active(self) -> bool:
        return self.phase != self.Phase.DONE

    @property
    def step_weight(self) -> float | None:
        return float(self.steps[self.step_index]) if 0 <= self.step_index < len(self.steps) else None
