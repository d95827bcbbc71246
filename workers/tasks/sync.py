from __future__ import annotations

import logging

from celery import shared_task

from workers.clients.ray_dashboard import RayUnavailable

log = logging.getLogger(__name__)

MAX_PUSH_RETRIES = 6
STATUS_POLL_INTERVAL_S = 1.0
STATUS_POLL_MAX = 180  # about three minutes of polling after a push


def backoff(retries: int) -> float:
    return float(min(2**retries, 30))


@shared_task(bind=True, max_retries=MAX_PUSH_RETRIES, acks_late=True)
def sync_cluster(self, cluster_id: int, trigger: str = "write", force: bool = False) -> str:  # type: ignore[no-untyped-def]
    from apps.clusters.models import Cluster
    from apps.clusters.sync import push_cluster

    if not Cluster.objects.filter(pk=cluster_id).exists():
        return "no-such-cluster"
    try:
        result = push_cluster(cluster_id, trigger=trigger, force=force, attempt=self.request.retries)
    except RayUnavailable as exc:
        if self.request.retries >= self.max_retries:
            log.warning(
                "push to cluster %s gave up after %s tries; reconcile takes over", cluster_id, self.request.retries
            )
            return "gave-up"
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
    if result.outcome in ("pushed", "skipped"):
        poll_status.apply_async((cluster_id, 0), countdown=0.5)
    return result.outcome


@shared_task
def poll_status(cluster_id: int, n: int = 0) -> str:
    """Follow a push until every app has settled (RUNNING / DEPLOY_FAILED / UNHEALTHY)."""
    from apps.clusters.sync import observe_cluster

    try:
        settled = observe_cluster(cluster_id)
    except RayUnavailable:
        settled = False
    except Exception:  # the row may be gone; never let polling crash the worker
        log.exception("status poll of cluster %s failed", cluster_id)
        return "error"
    if not settled and n < STATUS_POLL_MAX:
        poll_status.apply_async((cluster_id, n + 1), countdown=STATUS_POLL_INTERVAL_S)
        return "polling"
    return "settled" if settled else "gave-up"


@shared_task
def reconcile_cluster(cluster_id: int) -> str:
    from apps.clusters.sync import reconcile_cluster as reconcile

    try:
        outcome = reconcile(cluster_id)
    except RayUnavailable as exc:
        return f"unreachable: {exc}"
    if outcome in ("pushed-pending", "repaired"):
        poll_status.apply_async((cluster_id, 0), countdown=0.5)
    return outcome


@shared_task
def reconcile_all() -> int:
    from apps.clusters.models import Cluster

    ids = list(Cluster.objects.values_list("id", flat=True))
    for cluster_id in ids:
        reconcile_cluster.delay(cluster_id)
    return len(ids)
