from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(acks_late=False, time_limit=3600, soft_time_limit=3500)
def execute_plan(plan_id: int) -> str:
    from apps.compaction.execution import run_plan

    return run_plan(plan_id)


@shared_task
def compaction_policy_all() -> dict:
    from apps.clusters.models import Cluster
    from apps.compaction.policy import policy_tick

    out = {}
    for cluster_id in Cluster.objects.exclude(compaction_settings__compaction_policy="off").values_list(
        "id", flat=True
    ):
        try:
            out[cluster_id] = policy_tick(cluster_id)
        except Exception:  # one cluster's problem must not stop the others
            log.exception("compaction policy for cluster %s failed", cluster_id)
            out[cluster_id] = "error"
    return out
