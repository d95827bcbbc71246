"""Time series scraped from Ray, stored as deltas (counters) or values (gauges), with rollups and retention; and
each cluster's metrics source (where Ray's series are read from) with its scrape lease."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from apps.clusters.models import Cluster
from apps.core.secrets import EncryptedTextField
from apps.core.validators import validate_matchers, validate_service_url


def validate_credential(value: str) -> None:
    if any(c in value for c in "\r\n"):  # it goes into an HTTP header; never echoed back
        raise ValidationError("Must be one line: a bearer token, or user:password for basic auth.")


class MetricsConfig(models.Model):
    """One per cluster (``cluster.metrics_config``): where its Ray series come from, and the scrape's lease and
    state. A cluster part: the API shows the source's fields among the cluster's."""

    class MetricsSource(models.TextChoices):
        EMBEDDED = "embedded", "Embedded store (the control plane scrapes Ray)"
        PROMETHEUS = "prometheus", "Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics)"

    cluster = models.OneToOneField(Cluster, on_delete=models.CASCADE, primary_key=True, related_name="metrics_config")
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
        blank=True,
        validators=[validate_credential],
        help_text="A bearer token, or user:password for basic auth (write-only, encrypted at rest).",
    )
    metrics_answered_at = models.DateTimeField(
        null=True, blank=True, help_text="When the Prometheus query endpoint last answered a query."
    )
    metrics_error = models.TextField(blank=True, help_text="Why the last Prometheus query failed (empty: it answered).")

    # One scrape per cluster at a time.
    scrape_owner = models.CharField(max_length=32, blank=True)
    scrape_lease_until = models.DateTimeField(null=True, blank=True)
    scrape_targets_ok = models.JSONField(
        default=dict, blank=True, help_text="target -> when it was last scraped whole (new counters count from zero)."
    )
    gpus = models.JSONField(
        default=list,
        blank=True,
        help_text="Each real GPU now, with the processes on it and the replicas they are (apps.metrics.gpus).",
    )
    gpus_at = models.DateTimeField(null=True, blank=True, help_text="When ``gpus`` was read.")
    gpus_error = models.CharField(max_length=300, blank=True, help_text="Why the last read of the GPUs failed.")

    class Meta:
        verbose_name = "metrics source"

    def __str__(self) -> str:
        return f"metrics source of cluster {self.cluster_id}"

    def clean(self) -> None:
        if self.metrics_source == self.MetricsSource.PROMETHEUS and not self.prometheus_url:
            raise ValidationError({"prometheus_url": "Required when metrics_source is prometheus."})

    @property
    def is_remote(self) -> bool:
        return self.metrics_source == self.MetricsSource.PROMETHEUS


class Series(models.Model):
    class Kind(models.TextChoices):
        GAUGE = "gauge", "Gauge"
        COUNTER = "counter", "Counter (stored as deltas)"

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="series")
    name = models.CharField(max_length=120)
    labels = models.JSONField(default=dict)
    key = models.CharField(max_length=64, help_text="sha1 of name and sorted labels")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # For counters: the last raw value seen, to turn the next one into a delta (resets never go negative).
    last_raw = models.FloatField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "key"], name="series_unique_key")]
        indexes = [models.Index(fields=["cluster", "name"])]

    def __str__(self) -> str:
        return f"{self.name}{self.labels}"


class Point(models.Model):
    """One value of a series. resolution 0 is raw (one per scrape); 60 and 3600 are rollups."""

    RAW, MINUTE, HOUR = 0, 60, 3600
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="points")
    resolution = models.PositiveIntegerField(default=0)
    ts = models.DateTimeField()
    value = models.FloatField()
    samples = models.PositiveIntegerField(default=1)

    class Meta:
        indexes = [models.Index(fields=["series", "resolution", "ts"]), models.Index(fields=["resolution", "ts"])]

    def __str__(self) -> str:
        return f"{self.series_id}@{self.ts:%H:%M:%S}={self.value}"


class ScrapeRun(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="scrapes")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    targets = models.PositiveIntegerField(default=0)
    targets_failed = models.PositiveIntegerField(default=0)
    samples = models.PositiveIntegerField(default=0)
    points_written = models.PositiveIntegerField(default=0)
    counter_resets = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"scrape {self.cluster} {self.started_at:%H:%M:%S}"
