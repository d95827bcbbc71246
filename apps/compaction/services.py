"""Writes of compaction plans: make one from a fresh observation, start its execution (at most one per cluster)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.core.jobs import enqueue
from apps.rollouts.selectors import under_way_labels

from .inputs import observe_for_plan, serve_in_motion
from .models import CompactionPlan, CompactionStep
from .planner import plan as run_planner


def drain_method(cluster: Cluster) -> str:
    """How this cluster's nodes are drained: 'gcs' (the optional override), 'job' (through the dashboard)."""
    if cluster.compaction_settings.gcs_address:
        return "gcs"
    if cluster.dashboard_url:
        return "job"
    return ""


def execution_readiness(cluster: Cluster) -> dict[str, Any]:
    """What executing a plan on this cluster will use, and what is missing (shown before anyone presses Execute)."""
    method = drain_method(cluster)
    missing = []
    if not method:
        missing.append("The cluster has no dashboard URL and no GCS address: nodes cannot be drained.")
    if cluster.health == Cluster.Health.UNREACHABLE:
        missing.append(f"The cluster's dashboard did not answer at the last check: {cluster.health_message[:300]}")
    via = {
        "job": f"a short Ray job on the head node, submitted through the dashboard at {cluster.dashboard_url}",
        "gcs": f"the GCS at {cluster.compaction_settings.gcs_address} (the cluster's GCS address override)",
    }.get(method, "")
    return {"method": method, "via": via, "missing": missing, "ready": not missing}


def _refuse_during_rollouts(cluster: Cluster) -> None:
    rolling = under_way_labels(cluster.pk)
    if rolling:
        raise ValidationError(
            {
                "cluster": [
                    f"A rollout is under way on {cluster.name} ({', '.join(rolling[:5])}): its new version runs beside "
                    "the old one only until it ends, and a drain would move the replicas that judge its steps. "
                    "Compact when it has ended."
                ]
            }
        )


def plan_create(*, actor: Any, cluster: Cluster, trigger: str = "manual", source: str = "api") -> CompactionPlan:
    """Observe the cluster, then plan from that observation (never from a stored one that may be older than the
    last deployment)."""
    _refuse_during_rollouts(cluster)
    obs, state = observe_for_plan(cluster)
    if not state["nodes"]:
        raise ValidationError({"cluster": [f"Ray reports no alive node on cluster {cluster.name}."]})
    moving = serve_in_motion(obs.apps)
    if moving:
        raise ValidationError(
            {
                "cluster": [
                    "Serve is moving replicas on its own right now, so a plan would be out of date at once "
                    f"({'; '.join(moving[:5])}). Plan again when it has settled."
                ]
            }
        )
    return save_plan(actor=actor, cluster=cluster, state=state, observed_at=obs.at, trigger=trigger, source=source)


@transaction.atomic
def save_plan(
    *, actor: Any, cluster: Cluster, state: dict, observed_at: datetime, trigger: str, source: str
) -> CompactionPlan:
    result = run_planner(state)
    gpus = Decimal(str(result["freed"].get("GPU", 0)))
    CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.PLANNED).update(
        state=CompactionPlan.State.SUPERSEDED
    )
    plan = CompactionPlan.objects.create(
        cluster=cluster,
        trigger=trigger,
        input=state,
        nodes_to_drain=result["nodes_to_drain"],
        moves=result["moves"],
        freed=result["freed"],
        gpus_freed=gpus,
        gpu_hours_per_day=gpus * 24,
        observed_at=observed_at,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    on_node: dict[str, list[dict]] = {}
    for rep in state["replicas"]:
        on_node.setdefault(rep["node"], []).append({k: rep[k] for k in ("id", "app", "deployment", "team")})
    CompactionStep.objects.bulk_create(
        CompactionStep(plan=plan, index=i, node_id=node_id, replicas=on_node.get(node_id, []))
        for i, node_id in enumerate(result["nodes_to_drain"])
    )
    audit_record(
        actor=actor,
        action="compaction.plan",
        obj=plan,
        source=source,
        after={
            "cluster": cluster.name,
            "nodes_to_drain": len(plan.nodes_to_drain),
            "moves": len(plan.moves),
            "gpus_freed": str(gpus),
        },
    )
    return plan


def plan_execute(*, actor: Any, plan: CompactionPlan, source: str = "api") -> CompactionPlan:
    """Start executing a planned plan; at most one compaction runs per cluster at a time."""
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=plan.cluster_id)
        plan = CompactionPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != CompactionPlan.State.PLANNED:
            raise ValidationError({"state": [f"Only a planned plan can be executed; this one is {plan.state}."]})
        if not plan.nodes_to_drain:
            raise ValidationError({"nodes_to_drain": ["This plan frees no node: there is nothing to execute."]})
        if CompactionPlan.objects.filter(cluster_id=plan.cluster_id, state=CompactionPlan.State.EXECUTING).exists():
            raise ValidationError({"cluster": ["Another compaction is running on this cluster."]})
        if not drain_method(cluster):
            raise ValidationError({"cluster": execution_readiness(cluster)["missing"]})
        _refuse_during_rollouts(cluster)
        plan.state = CompactionPlan.State.EXECUTING
        plan.started_at = timezone.now()
        plan.save(update_fields=["state", "started_at"])
        audit_record(
            actor=actor, action="compaction.execute", obj=plan, source=source, after={"nodes": plan.nodes_to_drain}
        )

        transaction.on_commit(lambda: enqueue("workers.tasks.compaction.execute_plan", plan.pk))
    return plan
