"""Alert rules, the incidents they open, and how incidents reach people (UI, email, signed webhooks)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.core.secrets import EncryptedTextField
from apps.teams.models import Team

from .kinds import KIND_CHOICES


class AlertRule(models.Model):
    """What fires an incident, and its parameters, for a scope.

    A rule with no team, application or cluster is a default every team gets (staff edit it). A more specific
    rule of the same kind overrides it for its scope: application > team > cluster > default.
    """

    kind = models.CharField(max_length=24, choices=KIND_CHOICES)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules")
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules")
    enabled = models.BooleanField(default=True)
    params = models.JSONField(default=dict, blank=True, help_text="Thresholds and windows; missing ones default.")
    quiet_period_s = models.PositiveIntegerField(
        default=900, help_text="After an incident resolves, the same condition within this time reopens it silently."
    )
    email = models.BooleanField(default=True, help_text="Also send email to the team's admins (and staff).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "team", "application", "cluster"],
                name="alertrule_unique_scope",
                nulls_distinct=False,
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.scope_label})"

    @property
    def scope_label(self) -> str:
        if self.application_id:
            return f"application {self.application}"
        if self.team_id and self.cluster_id:
            return f"team {self.team} on {self.cluster}"
        if self.team_id:
            return f"team {self.team}"
        if self.cluster_id:
            return f"cluster {self.cluster}"
        return "default"


class Incident(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    kind = models.CharField(max_length=24, choices=KIND_CHOICES)
    key = models.CharField(max_length=200, help_text="What the incident is about: one open incident per key.")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents")
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.SET_NULL, related_name="incidents"
    )
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents")
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    severity = models.CharField(max_length=10, default="warning")  # critical | warning | info
    summary = models.CharField(max_length=300)
    evidence = models.JSONField(default=dict, blank=True, help_text="The status or series points that fired it.")
    opened_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    reopened = models.PositiveIntegerField(default=0, help_text="Times it came back within the quiet period.")
    notified_state = models.CharField(max_length=10, blank=True, help_text="The last state people were told of.")
    quiet_until = models.DateTimeField(
        null=True, blank=True, help_text="Until then, the condition coming back reopens it without notifying."
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=Q(state="open"), name="incident_one_open_per_key")
        ]
        indexes = [models.Index(fields=["team", "state"]), models.Index(fields=["key", "-resolved_at"])]

    def __str__(self) -> str:
        return f"incident #{self.pk} {self.kind} ({self.state})"


class IncidentAck(models.Model):
    """A team acknowledged a shared (cluster) incident for itself: the others are still alerted."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="team_acks")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="incident_acks")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["incident", "team"], name="incident_ack_once_per_team")]


class WebhookEndpoint(models.Model):
    class Format(models.TextChoices):
        JSON = "json", "JSON"
        SLACK = "slack", "Slack-compatible"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    secret = EncryptedTextField(help_text="Signs every request (HMAC-SHA256); encrypted at rest, never shown.")
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSON)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__slug", "id"]

    def __str__(self) -> str:
        return f"webhook {self.pk} of {self.team_id}"


class Delivery(models.Model):
    """One notification of one incident event (opened or resolved) to one channel."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=10)  # open | resolved
    channel = models.CharField(max_length=10)  # webhook | email
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="deliveries",
        help_text="The team told (its webhook, its admins' mail): it gets its own view of a shared incident. "
        "None: staff.",
    )
    recipients = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_rows")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    answer = models.CharField(max_length=500, blank=True, help_text="The receiver's answer or the error.")
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["at", "id"]


class WasteReport(models.Model):
    """A team's weekly GPU waste report, kept so the page and the API show the same figures as the email."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="waste_reports")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    emailed_to = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-period_end", "-id"]
        constraints = [models.UniqueConstraint(fields=["team", "period_end"], name="wastereport_unique_period")]
