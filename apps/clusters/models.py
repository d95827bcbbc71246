from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.core.secrets import EncryptedTextField
from apps.teams.models import slug_validator


class Cluster(models.Model):
    class Kind(models.TextChoices):
        RAY = "ray", "Ray (dashboard REST API)"
        KUBERAY = "kuberay", "KubeRay (RayService)"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        HEALTHY = "healthy", "Healthy"
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.RAY)
    dashboard_url = models.URLField(help_text="Ray dashboard, e.g. http://127.0.0.1:8265")
    auth_token = EncryptedTextField(blank=True, help_text="Bearer token for Ray token auth (encrypted at rest).")
    serve_url = models.URLField(blank=True, help_text="Where Serve's HTTP proxy answers, e.g. http://127.0.0.1:8000")
    http_port = models.PositiveIntegerField(default=8000, help_text="Port of Serve's HTTP proxies (http_options).")
    runtime_env_policy = models.JSONField(
        default=dict,
        blank=True,
        help_text='What runtime_env may use here, e.g. {"allowed_uri_prefixes": ["s3://ml-artifacts/"], '
        '"allow_pip": false, "allow_env_vars": true}. Empty: remote URIs, pip and env_vars allowed.',
    )
    team_max_apps = models.PositiveIntegerField(
        default=50, help_text="Applications each team may run here (the scheduler and object store are shared)."
    )
    team_max_replicas = models.PositiveIntegerField(
        default=200,
        help_text="Replicas each team may run here, counted as Ray would start them (max, gangs, surge, actors).",
    )
    k8s_namespace = models.CharField(max_length=63, blank=True, help_text="KubeRay: namespace of the RayService.")
    k8s_name = models.CharField(max_length=63, blank=True, help_text="KubeRay: name of the RayService.")
    kubeconfig = EncryptedTextField(
        blank=True, help_text="KubeRay: kubeconfig YAML (encrypted at rest); empty uses the in-cluster account."
    )
    ray_cluster_template = models.JSONField(
        default=dict,
        blank=True,
        help_text="KubeRay: spec.rayClusterConfig used when the control plane creates the RayService.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    # Observed health, written by the workers.
    health = models.CharField(max_length=12, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.TextField(blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    drift = models.JSONField(default=list, blank=True, help_text="Differences found by the last reconcile.")
    unmanaged_apps = models.JSONField(default=list, blank=True)
    nodes = models.JSONField(default=list, blank=True, help_text="Ray's node list at the last observation.")
    replica_moves = models.JSONField(
        default=list, blank=True, help_text="Replicas seen moving between nodes with no config change (last 50)."
    )
    # Apps that ran on the cluster before it was registered: carried unchanged in every push until staff adopt
    # them into a team or remove them. name -> {"config", "route_prefix", "status", "seen_at"}.
    inventory_taken_at = models.DateTimeField(
        null=True, blank=True, help_text="When the apps already on the cluster were recorded (before any push)."
    )
    preexisting_apps = models.JSONField(default=dict, blank=True)

    # The version of the desired state: every write bumps it (deploys' push state records what was pushed).
    desired_generation = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.kind == self.Kind.KUBERAY:
            missing = [f for f in ("k8s_namespace", "k8s_name") if not getattr(self, f)]
            errors = {f: "Required for a KubeRay cluster." for f in missing}
            if errors:
                raise ValidationError(errors)


class GpuPool(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=50, validators=[slug_validator])
    resource = models.CharField(
        max_length=50, default="GPU", help_text='Ray resource counted in this pool: "GPU" or a custom resource.'
    )
    capacity = models.DecimalField(
        max_digits=12, decimal_places=4, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="pool_unique_cluster_name")]
        ordering = ["cluster__name", "name"]

    def __str__(self) -> str:
        return f"{self.cluster.name}/{self.name}"


class SyncRun(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        SKIPPED = "skipped", "Skipped (unchanged)"
        FAILED = "failed", "Failed"

    class ErrorKind(models.TextChoices):
        UNREACHABLE = "unreachable", "Ray did not answer"
        REFUSED = "refused", "Ray refused the config"
        INVALID = "invalid", "The merged config failed Ray's schema"
        ABANDONED = "abandoned", "The worker stopped"

    class Trigger(models.TextChoices):
        WRITE = "write", "Write"
        RECONCILE = "reconcile", "Reconcile"
        DRIFT = "drift", "Drift repair"
        MANUAL = "manual", "Manual"
        ROLLOUT = "rollout", "Rollout step"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.WRITE)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    generation = models.PositiveBigIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0)
    config_hash = models.CharField(max_length=64, blank=True)
    config_snapshot = models.JSONField(default=dict, blank=True)
    app_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    error_kind = models.CharField(
        max_length=12,
        choices=ErrorKind.choices,
        blank=True,
        help_text="What kind of failure: what a team that is not at fault is told instead of Ray's text.",
    )
    faults = models.JSONField(
        default=dict,
        blank=True,
        help_text="Serve app name -> Ray's reason, for the apps found at fault and left out of the push.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["cluster", "-created_at"])]

    def __str__(self) -> str:
        return f"sync #{self.pk} {self.cluster} {self.state}"

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None
