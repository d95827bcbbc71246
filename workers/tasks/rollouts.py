"""Canary rollouts: one tick chain per cluster with a rollout under way (observe, judge the step, advance or roll
back, every ``ROLLOUT_TICK_S``), so an idle installation runs no rollout task at all.

A rollout's start begins its cluster's chain; the chain ends when the cluster has no rollout left. A lease in the
cache keeps it to one chain per cluster; beat's reconcile (every 20 s) starts a chain again for a cluster that has
a rollout and no chain (its worker died).
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from workers.clients.ray_dashboard import RayUnavailable

log = logging.getLogger(__name__)


def _lease_key(cluster_id: int) -> str:
    return f"rollout-tick:{cluster_id}"


def _lease_s() -> float:
    return max(30.0, 6 * float(settings.ROLLOUT_TICK_S))


def _active(cluster_id: int) -> bool:
    from apps.rollouts.selectors import under_way

    return under_way(cluster_id).exists()


@shared_task(ignore_result=True)
def follow(cluster_id: int) -> bool:
    """Start the cluster's tick chain unless one runs, or there is nothing to follow. True if started."""
    token = uuid.uuid4().hex
    if not _active(cluster_id) or not cache.add(_lease_key(cluster_id), token, timeout=_lease_s()):
        return False
    tick_cluster.apply_async((cluster_id, token), countdown=0.5)
    return True


@shared_task(ignore_result=True)
def tick_cluster(cluster_id: int, token: str | None = None) -> str:
    """Read what Ray runs on the cluster, move each of its rollouts along, push when one changed. With ``token``
    (the chain's lease), schedule the next tick while a rollout remains; without, one tick."""
    from apps.clusters.services import request_sync
    from apps.deploys.observe import observe
    from apps.rollouts import services
    from apps.rollouts.selectors import under_way

    if token is not None and cache.get(_lease_key(cluster_id)) != token:
        return "superseded"
    outcome = "unchanged"
    try:
        seen = observe(cluster_id)
    except RayUnavailable as exc:
        seen, outcome = None, f"unreachable: {exc}"  # nothing is decided blind; the deadline holds once Ray answers
    if seen is not None:
        changed = False
        for rollout in under_way(cluster_id):
            try:
                changed |= services.tick(rollout, seen.apps)
            except Exception:  # one rollout's trouble never stops the others'
                log.exception("rollout %s: tick failed", rollout.pk)
        if changed:
            request_sync(cluster_id=cluster_id, trigger="rollout")
            outcome = "changed"
    if token is not None:
        if _active(cluster_id):
            cache.set(_lease_key(cluster_id), token, timeout=_lease_s())
            tick_cluster.apply_async((cluster_id, token), countdown=float(settings.ROLLOUT_TICK_S))
        else:
            cache.delete(_lease_key(cluster_id))
    return outcome
