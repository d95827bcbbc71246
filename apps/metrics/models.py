"""Time series scraped from Ray, stored as deltas (counters) or values (gauges), with rollups and retention."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.clusters.models import Cluster


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
