from __future__ import annotations

import re
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from apps.core.secrets import EncryptedTextField
from apps.teams.models import slug_validator

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_service_url(value: str) -> None:
    """http(s)://host[:port][/path]; a service name without dots (as in Compose or Kubernetes) is a host too."""
    from urllib.parse import urlsplit

    from django.core.exceptions import ValidationError

    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Not a URL: {exc}.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("Enter an http:// or https:// URL, e.g. http://prometheus:9090.")
    if parts.username or parts.password:
        raise ValidationError("Put no credentials in the URL: use prometheus_credential (kept encrypted).")
    if parts.query or parts.fragment:
        raise ValidationError("The base URL of the query API, with no query string, e.g. http://prometheus:9090.")
    del port


def validate_matchers(value: object) -> None:
    """Label matchers that select one cluster's series in Prometheus: {"label": "value"}, equality only."""
    from django.core.exceptions import ValidationError

    if not isinstance(value, dict):
        raise ValidationError('Must be a JSON object of label names to values, e.g. {"ray_cluster": "prod-a"}.')
    if len(value) > 20:
        raise ValidationError("At most 20 label matchers.")
    for key, v in value.items():
        if not isinstance(key, str) or not LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise ValidationError(f"{key!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*).")
        if not isinstance(v, str) or not v or len(v) > 200:
            raise ValidationError(f"The value of {key!r} must be a non-empty string of at most 200 characters.")


class Cluster(models.Model):
    class Kind(models.TextChoices):
        RAY = "ray", "Ray (dashboard REST API)"
        KUBERAY = "kuberay", "KubeRay (RayService)"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        HEALTHY = "healthy", "Healthy"
        UNREACHABLE = "unreachable", "Unreachable"

    class MetricsSource(models.TextChoices):
        EMBEDDED = "embedded", "Embedded store (the control plane scrapes Ray)"
        PROMETHEUS = "prometheus", "Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics)"

    class DriftPolicy(models.TextChoices):
        REPAIR = "repair", "Repair (re-push the desired config)"
        FLAG = "flag", "Flag only"

    name = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.RAY)
    dashboard_url = models.URLField(help_text="Ray dashboard, e.g. http://127.0.0.1:8265")
    auth_token = EncryptedTextField(blank=True, help_text="Bearer token for Ray token auth (encrypted at rest).")
    serve_url = models.URLField(blank=True, help_text="Where Serve's HTTP proxy answers, e.g. http://127.0.0.1:8000")
    http_port = models.PositiveIntegerField(default=8000, help_text="Port of Serve's HTTP proxies (http_options).")
    drift_policy = models.CharField(max_length=10, choices=DriftPolicy.choices, default=DriftPolicy.REPAIR)
    metrics_targets = models.JSONField(
        default=list,
        blank=True,
        help_text="host:port of each metrics endpoint; empty: discovered from the dashboard (/api/prometheus/sd).",
    )
    metrics_source = models.CharField(
        max_length=10,
        choices=MetricsSource.choices,
        default=MetricsSource.EMBEDDED,
        help_text="Where Ray's series are read from. The control plane's own (allocation, showback) stay here.",
    )
    prometheus_url = models.CharField(
        max_length=300,
        blank=True,
        validators=[validate_service_url],
        help_text="Prometheus query API base, e.g. http://prometheus:9090 (metrics_source prometheus).",
    )
    prometheus_matchers = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_matchers],
        help_text='Label matchers that select this cluster\'s series, e.g. {"ray_cluster": "prod-a"}.',
    )
    prometheus_credential = EncryptedTextField(
        blank=True, help_text="A bearer token, or user:password for basic auth (write-only, encrypted at rest)."
    )
    runtime_env_policy = models.JSONField(
        default=dict,
        blank=True,
        help_text='What runtime_env may use here, e.g. {"allowed_uri_prefixes": ["s3://ml-artifacts/"], '
        '"allow_pip": false, "allow_env_vars": true}. Empty: remote URIs, pip and env_vars allowed.',
    )
    gcs_address = models.CharField(
        max_length=200, blank=True, help_text="Ray GCS address (host:port) for draining nodes during compaction."
    )
    compaction_policy = models.CharField(
        max_length=10,
        choices=[("off", "Off"), ("suggest", "Suggest plans"), ("automatic", "Automatic")],
        default="suggest",
    )
    compaction_threshold = models.PositiveIntegerField(
        default=1, help_text="Automatic compaction runs when at least this many nodes could be freed."
    )
    compaction_window = models.CharField(
        max_length=11, blank=True, help_text='UTC hours when automatic compaction may run, e.g. "01:00-05:00".'
    )
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
    metrics_answered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the Prometheus query endpoint last answered a query."
    )
    metrics_error = models.TextField(blank=True, help_text="Why the last Prometheus query failed (empty: it answered).")
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

    # Background work holds leases, so each cluster has at most one status poller and one scrape at a time.
    poll_token = models.CharField(max_length=32, blank=True)
    poll_lease_until = models.DateTimeField(null=True, blank=True)
    poll_requests = models.PositiveBigIntegerField(default=0, help_text="Bumped by each push the poller must follow.")
    scrape_owner = models.CharField(max_length=32, blank=True)
    scrape_lease_until = models.DateTimeField(null=True, blank=True)
    scrape_targets_ok = models.JSONField(
        default=dict, blank=True, help_text="target -> when it was last scraped whole (new counters count from zero)."
    )

    # The push: every write bumps desired_generation; a push records what it sent.
    desired_generation = models.PositiveBigIntegerField(default=0)
    pushed_generation = models.PositiveBigIntegerField(default=0)
    last_pushed_hash = models.CharField(max_length=64, blank=True)
    last_failed_hash = models.CharField(max_length=64, blank=True, help_text="A config Ray refused: not retried.")
    drift_repair_hash = models.CharField(max_length=64, blank=True)
    drift_repairs = models.PositiveIntegerField(default=0, help_text="Repair pushes of drift_repair_hash so far.")
    lock_owner = models.CharField(max_length=64, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)

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
        if self.starter_gpus and not self.starter_pool:
            raise ValidationError({"starter_pool": "Required when starter_gpus is more than 0."})
        if self.metrics_source == self.MetricsSource.PROMETHEUS and not self.prometheus_url:
            raise ValidationError({"prometheus_url": "Required when metrics_source is prometheus."})


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

    class Trigger(models.TextChoices):
        WRITE = "write", "Write"
        RECONCILE = "reconcile", "Reconcile"
        DRIFT = "drift", "Drift repair"
        MANUAL = "manual", "Manual"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sync_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.WRITE)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    generation = models.PositiveBigIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0)
    config_hash = models.CharField(max_length=64, blank=True)
    config_snapshot = models.JSONField(default=dict, blank=True)
    app_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
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
