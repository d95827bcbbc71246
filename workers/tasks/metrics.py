from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def scrape_cluster(cluster_id: int) -> dict:
    from apps.metrics.services import scrape_cluster as scrape

    run = scrape(cluster_id)
    if run is None:
        return {"skipped": "another scrape of this cluster is running"}
    return {"targets": run.targets, "failed": run.targets_failed, "points": run.points_written}


@shared_task(ignore_result=True)
def scrape_all() -> int:
    from apps.clusters.models import Cluster

    ids = list(Cluster.objects.values_list("id", flat=True))
    for cluster_id in ids:
        scrape_cluster.delay(cluster_id)
    return len(ids)


@shared_task(ignore_result=True)
def rollup_and_retention() -> dict:
    from apps.metrics.models import Point
    from apps.metrics.services import enforce_retention, rollup

    minutes = rollup(Point.MINUTE, lookback=timedelta(minutes=5))
    hours = rollup(Point.HOUR, lookback=timedelta(hours=2))
    removed = enforce_retention()
    return {"minute_points": minutes, "hour_points": hours, "removed": removed}
