from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.clusters.models import Cluster
from apps.teams.models import Team


def serve_app_name(team_slug: str, name: str) -> str:
    """The app's name on the cluster. Slugs never contain "--", so the team is what precedes the first "--" and no
    two (team, name) pairs produce the same name, whatever the names hold ("amazon--LightGPT" included)."""
    return f"{team_slug}--{name}"


class Application(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending push"
        DEPLOYING = "deploying", "Deploying"
        RUNNING = "running", "Running"
        DEPLOY_FAILED = "deploy_failed", "Deploy failed"
        UNHEALTHY = "unhealthy", "Unhealthy"
        DELETING = "deleting", "Deleting"

    SETTLED = {State.RUNNING, State.DEPLOY_FAILED, State.UNHEALTHY}

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="applications")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="applications")
    name = models.CharField(max_length=60, help_text="Letters, digits, '_', '.' and '-', as Serve config files use.")
    route_prefix = models.CharField(
        max_length=100, blank=True, help_text="The route the app answers on; empty when it has no HTTP route."
    )
    adopted_serve_name = models.CharField(
        max_length=200,
        blank=True,
        help_text="For an app adopted from a cluster: the Serve name it kept, so its route never stopped answering.",
    )
    current_revision = models.ForeignKey("Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deployed_revision = models.ForeignKey(
        "Revision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    version = models.PositiveIntegerField(default=1, help_text="Bumped on every change; If-Match compares it.")
    state = models.CharField(max_length=15, choices=State.choices, default=State.PENDING)
    status = models.JSONField(default=dict, blank=True, help_text="What Ray last reported for this app.")
    status_message = models.TextField(blank=True)
    config_diff = models.JSONField(
        default=list, blank=True, help_text="Fields where what Ray runs differs in meaning from the current revision."
    )
    observed_at = models.DateTimeField(null=True, blank=True)
    replica_starts = models.JSONField(
        default=list,
        blank=True,
        help_text="Replicas Ray started without a config change (restarts), newest last: {t, deployment, replica_id}.",
    )
    fault_revision = models.ForeignKey(
        "Revision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="A revision left out of the merged push: Ray refused it, or it ran more than it was admitted for.",
    )
    fault = models.TextField(blank=True, help_text="Why fault_revision is left out (Ray's reason, or the excess).")
    good_revision = models.ForeignKey(
        "Revision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The last revision seen running within what was admitted: what runs while a newer one is at fault.",
    )
    observed_demand = models.JSONField(
        default=dict, blank=True, help_text="What Ray reports it reserves for the app, per resource (its own figure)."
    )
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["team__slug", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "cluster", "name"], condition=Q(deleted_at__isnull=True), name="app_unique_name"
            ),
            models.UniqueConstraint(
                fields=["cluster", "route_prefix"],
                condition=Q(deleted_at__isnull=True) & ~Q(route_prefix=""),
                name="app_unique_route",
            ),
        ]
        indexes = [models.Index(fields=["cluster", "deleted_at"])]

    def __str__(self) -> str:
        return self.serve_name

    @property
    def last_observed_at(self) -> Any:
        """When Ray's status of the app was last read. A reading that changed nothing of the app writes only the
        cluster's ``last_seen_at`` (an idle fleet would otherwise rewrite every app row every reconcile), so the
        later of the two, once the app has been observed at all."""
        seen = self.cluster.last_seen_at
        if self.observed_at is None or seen is None:
            return self.observed_at
        return max(self.observed_at, seen)

    @property
    def serve_name(self) -> str:
        return self.adopted_serve_name or serve_app_name(self.team.slug, self.name)

    @property
    def endpoint_url(self) -> str:
        """Where the app answers HTTP, when the cluster's Serve URL is known and the app has a route."""
        base = self.cluster.serve_url.rstrip("/") if self.cluster.serve_url else ""
        return f"{base}{self.route_prefix}" if base and self.route_prefix else ""

    @property
    def settled(self) -> bool:
        return self.state in self.SETTLED


class Revision(models.Model):
    """One immutable version of an application's spec. Rollback makes a new revision copying an old spec."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    message = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["application", "-number"]
        constraints = [models.UniqueConstraint(fields=["application", "number"], name="revision_unique_number")]

    def __str__(self) -> str:
        return f"{self.application_id}#r{self.number}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Revisions are immutable; make a new one")
        super().save(*args, **kwargs)


class RouteGrant(models.Model):
    """A route prefix a team may use besides its own namespace (``/<team-slug>``), granted by staff: ``/`` for
    the team that serves the cluster's front page, ``/api`` for a platform team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="route_grants")
    prefix = models.CharField(max_length=100)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["prefix"]
        constraints = [models.UniqueConstraint(fields=["prefix"], name="route_grant_one_team_per_prefix")]

    def __str__(self) -> str:
        return f"{self.prefix} for {self.team_id}"
