"""The reconcile of one cluster: observe, then push what is pending or repair drift, per the cluster's policy."""

from __future__ import annotations

import logging

from django.utils import timezone

from apps.clusters.models import Cluster, SyncRun
from workers.clients.ray_dashboard import RayUnavailable

from .config import build_serve_config
from .models import PushState
from .observe import observe_cluster
from .push import push_cluster

log = logging.getLogger(__name__)


MAX_DRIFT_REPAIRS = 3


def reconcile_cluster(cluster_id: int) -> str:
    """Observe, then push if a write is pending or the cluster drifted (per the cluster's drift policy)."""
    try:
        observe_cluster(cluster_id)
    except RayUnavailable:
        return "unreachable"
    cluster = Cluster.objects.select_related("push_state").get(pk=cluster_id)
    state = cluster.push_state
    if state.lock_owner and state.lock_expires_at and state.lock_expires_at > timezone.now():
        return "busy"
    if cluster.desired_generation > state.pushed_generation:
        push_cluster(cluster_id, trigger=SyncRun.Trigger.RECONCILE)
        return "pushed-pending"
    if cluster.drift and state.drift_policy == PushState.DriftPolicy.REPAIR:
        merged = build_serve_config(cluster)
        if merged.hash == state.last_failed_hash:
            return "drift-not-repairable"
        # A difference that a push of the same config does not remove is not drift the push can repair (Ray
        # rewrites something the comparison does not know): after a few tries, flag it and stop pushing.
        repairs = state.drift_repairs if state.drift_repair_hash == merged.hash else 0
        if repairs >= MAX_DRIFT_REPAIRS:
            return "drift-not-repairable"
        PushState.objects.filter(pk=cluster_id).update(drift_repair_hash=merged.hash, drift_repairs=repairs + 1)
        log.warning("cluster %s drifted: %s; repairing", cluster.name, [(d["app"], d["kind"]) for d in cluster.drift])
        push_cluster(cluster_id, trigger=SyncRun.Trigger.DRIFT, force=True)
        return "repaired"
    if not cluster.drift and state.drift_repairs:
        PushState.objects.filter(pk=cluster_id).update(drift_repair_hash="", drift_repairs=0)
    return "in-sync" if not cluster.drift else "drift-flagged"
