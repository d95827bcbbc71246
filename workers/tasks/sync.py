"""The push, the status poller and the reconcile. Thin tasks: ids in, services do the work.

Background work is bounded: a burst of writes coalesces into few pushes (the cluster's push lock), a cluster
has at most one status poller (the poll lease), the poller stops when every app has settled and backs off
when something never settles, and an idle cluster costs one reconcile per interval.
"""

from __future__ import annotations

import logging

from celery import shared_task

from workers.clients.ray_dashboard import RayUnavailable

log = logging.getLogger(__name__)

MAX_PUSH_RETRIES = 6
QUICK_POLLS = 8  # four a second for the first two seconds: small apps settle that fast, and users are watching
FAST_POLLS = 20  # then one a second while a deploy is young
MAX_POLL_DELAY_S = 30.0
STATUS_POLL_MAX = 60  # ~20 fast polls, then backing off to 30 s: about fifteen minutes, then the reconcile watches
POLL_LEASE_MARGIN_S = 60.0


def backoff(retries: int) -> float:
    return float(min(2**retries, 30))


def poll_delay(n: int) -> float:
    """Seconds before poll n+1: 0.25 s, then 1 s, then doubling up to 30 s."""
    if n < QUICK_POLLS:
        return 0.25
    if n < FAST_POLLS:
        return 1.0
    return min(MAX_POLL_DELAY_S, 2.0 ** ((n - FAST_POLLS) / 2 + 1))


def follow_status(cluster_id: int) -> bool:
    """Start the cluster's status poller unless one runs (it then follows this push too). True if started."""
    from apps.deploys.locks import poll_claim

    token = poll_claim(cluster_id=cluster_id, lease_s=POLL_LEASE_MARGIN_S)
    if token is None:
        return False
    poll_status.apply_async((cluster_id, token, 0, None), countdown=0.25)
    return True


@shared_task(bind=True, max_retries=MAX_PUSH_RETRIES, acks_late=True)
def sync_cluster(self, cluster_id: int, trigger: str = "write", force: bool = False) -> str:
    from apps.clusters.models import Cluster
    from apps.deploys.push import push_cluster

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
    if result.pushed:
        # Follow the apps until they settle, also when the last round of this push found nothing new: a write
        # that landed during the first round's PUT (a model added to the catalog) was already in it.
        follow_status(cluster_id)
    return result.outcome


@shared_task
def poll_status(cluster_id: int, token: str = "", n: int = 0, requests_seen: int | None = None) -> str:
    """Follow the cluster's pushes until every app settles (RUNNING / DEPLOY_FAILED / UNHEALTHY).

    Only the holder of the cluster's poll lease polls; a push that arrives meanwhile makes it start again fast.
    """
    from apps.deploys.locks import poll_extend, poll_release
    from apps.deploys.observe import observe_cluster

    requests_now = poll_extend(cluster_id=cluster_id, token=token, lease_s=POLL_LEASE_MARGIN_S + poll_delay(n))
    if requests_now is None:
        return "superseded"
    newer_push = requests_seen is not None and requests_now != requests_seen
    if newer_push:
        n = 0  # a newer push: follow it from the start, and observe it once more before calling it settled
    try:
        settled = observe_cluster(cluster_id)
    except RayUnavailable:
        settled = False
    except Exception:  # the row may be gone; never let polling crash the worker
        log.exception("status poll of cluster %s failed", cluster_id)
        poll_release(cluster_id=cluster_id, token=token, requests_seen=requests_now)
        return "error"
    if settled and not newer_push and poll_release(cluster_id=cluster_id, token=token, requests_seen=requests_now):
        return "settled"
    if (
        not settled
        and n >= STATUS_POLL_MAX
        and poll_release(cluster_id=cluster_id, token=token, requests_seen=requests_now)
    ):
        log.info("cluster %s has apps that did not settle; the reconcile keeps watching", cluster_id)
        return "gave-up"
    delay = poll_delay(n) if not settled else 0.5
    poll_extend(cluster_id=cluster_id, token=token, lease_s=POLL_LEASE_MARGIN_S + delay)
    poll_status.apply_async((cluster_id, token, n + 1, requests_now), countdown=delay)
    return "polling"


@shared_task
def reconcile_cluster(cluster_id: int) -> str:
    from apps.deploys.reconcile import reconcile_cluster as reconcile

    from .rollouts import follow

    follow(cluster_id)  # a rollout whose tick chain stopped (its worker died) is followed again
    try:
        outcome = reconcile(cluster_id)
    except RayUnavailable as exc:
        return f"unreachable: {exc}"
    if outcome in ("pushed-pending", "repaired"):
        follow_status(cluster_id)
    return outcome


@shared_task
def reconcile_all() -> int:
    from apps.clusters.models import Cluster

    ids = list(Cluster.objects.values_list("id", flat=True))
    for cluster_id in ids:
        reconcile_cluster.delay(cluster_id)
    return len(ids)
