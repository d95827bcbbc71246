"""Compaction: plan from the observed state, execute node by node, record every step."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.applications.models import Application
from apps.applications.selectors import placed_replicas
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.core.jobs import enqueue
from apps.servespec.spec import to_decimal
from workers.clients.ray_dashboard import RayError, client_for
from workers.clients.ray_gcs import DrainError, drain_node

from .models import CompactionPlan, CompactionStep
from .planner import plan as run_planner

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 180


def drained_node_ids(cluster: Cluster) -> set[str]:
    """Nodes this control plane drained that Ray still lists: empty, unschedulable, releasable."""
    alive = {n["node_id"] for n in cluster.nodes or [] if n.get("state") == "ALIVE"}
    done = CompactionStep.objects.filter(plan__cluster=cluster, state=CompactionStep.State.SUCCEEDED)
    return set(done.values_list("node_id", flat=True)) & alive


def planner_input(cluster: Cluster) -> dict[str, Any]:
    """Nodes and replicas as last observed (Serve REST + State API), in the planner's JSON shape."""
    drained = drained_node_ids(cluster)
    nodes = []
    for n in cluster.nodes or []:
        if n.get("state") != "ALIVE" or n["node_id"] in drained:
            continue
        resources = {
            k: float(to_decimal(v))
            for k, v in (n.get("resources_total") or {}).items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")
        }
        labels = {k: v for k, v in (n.get("labels") or {}).items() if not k.startswith("ray.io/")}
        nodes.append(
            {
                "id": n["node_id"],
                "resources": resources,
                "head": bool(n.get("is_head_node")),
                "pool": labels.get("pool", ""),
                "labels": labels,
            }
        )
    known = {n["id"] for n in nodes}
    replicas = []
    for rep in placed_replicas(cluster):
        if rep.node_id in known and rep.running:
            replicas.append(
                {
                    "id": rep.replica["replica_id"],
                    "node": rep.node_id,
                    "app": rep.app.serve_name,
                    "deployment": rep.deployment,
                    "team": rep.app.team.slug,
                    "resources": {k: float(to_decimal(v)) for k, v in rep.resources.items()},
                }
            )
    return {"nodes": nodes, "replicas": replicas}


@transaction.atomic
def plan_create(*, actor: Any, cluster: Cluster, trigger: str = "manual", source: str = "api") -> CompactionPlan:
    if not cluster.nodes:
        raise ValidationError(
            {"cluster": [f"Cluster {cluster.name} has not been observed yet; wait for the next reconcile."]}
        )
    state = planner_input(cluster)
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
        observed_at=cluster.last_seen_at,
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
        Cluster.objects.select_for_update().get(pk=plan.cluster_id)
        plan = CompactionPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.state != CompactionPlan.State.PLANNED:
            raise ValidationError({"state": [f"Only a planned plan can be executed; this one is {plan.state}."]})
        if not plan.nodes_to_drain:
            raise ValidationError({"nodes_to_drain": ["This plan frees no node: there is nothing to execute."]})
        if CompactionPlan.objects.filter(cluster_id=plan.cluster_id, state=CompactionPlan.State.EXECUTING).exists():
            raise ValidationError({"cluster": ["Another compaction is running on this cluster."]})
        plan.state = CompactionPlan.State.EXECUTING
        plan.started_at = timezone.now()
        plan.save(update_fields=["state", "started_at"])
        audit_record(
            actor=actor, action="compaction.execute", obj=plan, source=source, after={"nodes": plan.nodes_to_drain}
        )

        transaction.on_commit(lambda: enqueue("workers.tasks.compaction.execute_plan", plan.pk))
    return plan


def _check_node(client: Any, node_id: str, targets: dict[str, int]) -> tuple[bool, str]:
    """Is the node empty, and does every app run with at least its replica count? Returns (done, why not)."""
    data = client.get_serve_applications()
    problems = []
    for name, app in (data.get("applications") or {}).items():
        if app.get("status") != "RUNNING":
            problems.append(f"{name} is {app.get('status')}")
        for dep_name, dep in (app.get("deployments") or {}).items():
            running = [r for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"]
            on_node = [r for r in dep.get("replicas") or [] if r.get("node_id") == node_id]
            want = targets.get(f"{name}/{dep_name}", dep.get("target_num_replicas") or 0)
            if on_node:
                problems.append(f"{len(on_node)} replica(s) of {name}/{dep_name} still on the node")
            if len(running) < want:
                problems.append(f"{name}/{dep_name} has {len(running)} of {want} replicas running")
    return (not problems, "; ".join(problems))


def _targets(client: Any) -> dict[str, int]:
    data = client.get_serve_applications()
    out = {}
    for name, app in (data.get("applications") or {}).items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            out[f"{name}/{dep_name}"] = len([r for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"])
    return out


def run_plan(plan_id: int, *, step_timeout_s: float = STEP_TIMEOUT_S, poll_s: float = 1.0) -> str:
    """Drain the plan's nodes one by one; after each, check the node is empty and nothing fell below its count."""

    plan = CompactionPlan.objects.select_related("cluster").get(pk=plan_id)
    if plan.state != CompactionPlan.State.EXECUTING:
        return f"not executing ({plan.state})"
    cluster = plan.cluster
    client = client_for(cluster)
    failure = ""
    for step in plan.steps.order_by("index"):
        if step.state == CompactionStep.State.SUCCEEDED:
            continue  # a retried task resumes where it stopped
        step.state, step.started_at = CompactionStep.State.DRAINING, timezone.now()
        step.save(update_fields=["state", "started_at"])
        try:
            targets = _targets(client)
            drain_node(
                gcs_address=cluster.gcs_address,
                node_id=step.node_id,
                reason_message=f"compaction plan {plan.pk} step {step.index}",
            )
            started = time.monotonic()
            while True:
                done, why = _check_node(client, step.node_id, targets)
                if done:
                    break
                if time.monotonic() - started > step_timeout_s:
                    raise TimeoutError(f"node not empty and healthy after {step_timeout_s:.0f} s: {why}")
                time.sleep(poll_s)
            elapsed = time.monotonic() - started
            step.state = CompactionStep.State.SUCCEEDED
            step.message = (
                f"emptied in {elapsed:.1f} s; {len(step.replicas)} replica(s) moved by Serve (start-then-stop)"
            )
        except (DrainError, RayError, TimeoutError) as exc:
            step.state = CompactionStep.State.FAILED
            step.message = str(exc)[:4000]
            failure = f"step {step.index} ({step.node_id[:12]}): {exc}"
        step.finished_at = timezone.now()
        step.save(update_fields=["state", "message", "finished_at"])
        if failure:
            break
    if failure:
        plan.steps.filter(state=CompactionStep.State.PENDING).update(
            state=CompactionStep.State.SKIPPED, message="not started: an earlier step failed"
        )
    plan.state = CompactionPlan.State.FAILED if failure else CompactionPlan.State.SUCCEEDED
    plan.error = failure[:4000]
    plan.finished_at = timezone.now()
    plan.save(update_fields=["state", "error", "finished_at"])
    audit_record(
        actor="system (compaction)",
        action=f"compaction.{plan.state}",
        obj=plan,
        source="task",
        after={"error": plan.error, "nodes": plan.nodes_to_drain},
    )
    return plan.state


def fragmentation(cluster: Cluster) -> dict[str, Any]:
    """How many nodes a plan could free now (what the automatic policy compares with its threshold)."""
    state = planner_input(cluster)
    result = run_planner(state)
    return {"nodes_freeable": len(result["nodes_to_drain"]), "gpus_freeable": result["freed"].get("GPU", 0)}


def in_window(window: str, now: Any = None) -> bool:
    if not window:
        return True
    now = now or timezone.now()
    try:
        start, end = (int(part.split(":")[0]) * 60 + int(part.split(":")[1]) for part in window.split("-"))
    except (ValueError, IndexError):
        return False
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start <= end else minute >= start or minute < end


def policy_tick(cluster_id: int) -> str:
    """Beat: suggest or run a compaction per the cluster's policy, never during a deploy or another compaction."""
    cluster = Cluster.objects.get(pk=cluster_id)
    if cluster.compaction_policy == "off" or not cluster.nodes:
        return "off"
    busy = (
        cluster.desired_generation != cluster.pushed_generation
        or Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(state__in=[s.value for s in Application.SETTLED])
        .exists()
    )
    if busy:
        return "deploy in progress"
    if CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.EXECUTING).exists():
        return "compaction running"
    frag = fragmentation(cluster)
    if frag["nodes_freeable"] < max(1, cluster.compaction_threshold):
        return "nothing to free"
    latest = CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.PLANNED).first()
    if cluster.compaction_policy == "suggest":
        if latest and latest.input == planner_input(cluster):
            return "suggested already"
        plan_create(actor="system (policy)", cluster=cluster, trigger="suggest", source="task")
        return "suggested"
    if not in_window(cluster.compaction_window):
        return "outside window"
    plan = plan_create(actor="system (policy)", cluster=cluster, trigger="automatic", source="task")
    plan_execute(actor="system (policy)", plan=plan, source="task")
    return "executing"
