"""Canary rollouts: beat moves every rollout along (observe its cluster, judge its step, advance or roll back)."""

from __future__ import annotations

import logging

from celery import shared_task

from workers.clients.ray_dashboard import RayUnavailable

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def tick_all() -> int:
    """One tick per cluster with a rollout under way; an idle installation costs one query."""
    from apps.rollouts.models import Rollout

    clusters = set(Rollout.objects.exclude(phase=Rollout.Phase.DONE).values_list("application__cluster_id", flat=True))
    for cluster_id in clusters:
        tick_cluster.delay(cluster_id)
    return len(clusters)


@shared_task(ignore_result=True)
def tick_cluster(cluster_id: int) -> str:
    """Read what Ray runs on the cluster, then move each of its rollouts along; push when one changed."""
    from apps.clusters.services import request_sync
    from apps.deploys.observe import observe
    from apps.rollouts import services
    from apps.rollouts.models import Rollout

    try:
        seen = observe(cluster_id)
    except RayUnavailable as exc:
        return f"unreachable: {exc}"  # nothing is decided blind; the deadline still holds once Ray answers
    changed = False
    for rollout in Rollout.objects.filter(application__cluster_id=cluster_id).exclude(phase=Rollout.Phase.DONE):
        try:
            changed |= services.tick(rollout, seen.apps)
        except Exception:  # one rollout's trouble never stops the others'
            log.exception("rollout %s: tick failed", rollout.pk)
    if changed:
        request_sync(cluster_id=cluster_id, trigger="rollout")
    return "changed" if changed else "unchanged"
