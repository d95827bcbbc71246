"""Compaction: observe then plan; execute by draining the plan's nodes together; verify every move."""

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
from apps.core.fields import error_text
from apps.core.jobs import enqueue
from apps.deploys.sync import Observation, observe
from apps.servespec.spec import to_decimal
from workers.clients.ray_dashboard import RayError, client_for
from workers.clients.ray_gcs import DrainError, drain_nodes, drain_nodes_via_job

from .models import CompactionPlan, CompactionStep
from .planner import parse as parse_state
from .planner import plan as run_planner
from .planner import relocate

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 180


def drained_node_ids(cluster: Cluster) -> set[str]:
    """Nodes this control plane drained that Ray still lists: empty, unschedulable, releasable."""
    alive = {n["node_id"] for n in cluster.nodes or [] if n.get("state") == "ALIVE"}
    done = CompactionStep.objects.filter(plan__cluster=cluster, state=CompactionStep.State.SUCCEEDED)
    return set(done.values_list("node_id", flat=True)) & alive


def _plan_nodes(cluster: Cluster, nodes: list[dict]) -> list[dict]:
    drained = drained_node_ids(cluster)
    out = []
    for n in nodes or []:
        if n.get("state") != "ALIVE" or n["node_id"] in drained:
            continue
        resources = {
            k: float(to_decimal(v))
            for k, v in (n.get("resources_total") or {}).items()
            if not k.startswith("node:") and k not in ("memory", "object_store_memory")
        }
        labels = {k: v for k, v in (n.get("labels") or {}).items() if not k.startswith("ray.io/")}
        out.append(
            {
                "id": n["node_id"],
                "resources": resources,
                "head": bool(n.get("is_head_node")),
                "pool": labels.get("pool", ""),
                "labels": labels,
            }
        )
    return out


def planner_input(cluster: Cluster) -> dict[str, Any]:
    """Nodes and replicas as last stored (Serve REST + State API), in the planner's JSON shape."""
    nodes = _plan_nodes(cluster, cluster.nodes)
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


def input_from_observation(cluster: Cluster, obs: Observation) -> dict[str, Any]:
    """The planner's input from one reading of the cluster: every Serve replica there, managed or not (an app
    the control plane does not manage still holds its resources and moves when its node drains)."""
    nodes = _plan_nodes(cluster, obs.nodes)
    known = {n["id"] for n in nodes}
    teams = {a.serve_name: a.team.slug for a in Application.objects.filter(cluster=cluster).select_related("team")}
    replicas = []
    for app_name, app in sorted(obs.apps.items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            resources = {k: float(to_decimal(v)) for k, v in (dep.get("required_resources") or {}).items()}
            for rep in dep.get("replicas") or []:
                if rep.get("state") == "RUNNING" and rep.get("node_id") in known:
                    replicas.append(
                        {
                            "id": rep["replica_id"],
                            "node": rep["node_id"],
                            "app": app_name,
                            "deployment": dep_name,
                            "team": teams.get(app_name, ""),
                            "resources": resources,
                        }
                    )
    return {"nodes": nodes, "replicas": replicas}


SETTLED_APP = ("RUNNING", "DEPLOY_FAILED", "UNHEALTHY")


def serve_in_motion(apps: dict) -> list[str]:
    """What Serve is doing on its own right now: replicas migrating, starting or stopping, apps deploying.

    With RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1, Serve compacts in the background (it migrates a node's
    replicas away, PENDING_MIGRATION); a drain then would fight it, so compaction waits for this to be empty.
    """
    out = []
    for app_name, app in sorted((apps or {}).items()):
        if app.get("status") not in SETTLED_APP:
            out.append(f"{app_name} is {app.get('status')}")
            continue
        if app.get("status") != "RUNNING":
            continue  # a failed app's restarts are not a migration
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            states: dict[str, int] = {}
            for rep in dep.get("replicas") or []:
                if rep.get("state") != "RUNNING":
                    states[rep.get("state", "?")] = states.get(rep.get("state", "?"), 0) + 1
            if states:
                counts = ", ".join(f"{n} {st}" for st, n in sorted(states.items()))
                out.append(f"{app_name}/{dep_name}: {counts}")
    return out


def drain_method(cluster: Cluster) -> str:
    """How this cluster's nodes are drained: 'gcs' (the optional override), 'job' (through the dashboard)."""
    if cluster.gcs_address:
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
        "gcs": f"the GCS at {cluster.gcs_address} (the cluster's GCS address override)",
    }.get(method, "")
    return {"method": method, "via": via, "missing": missing, "ready": not missing}


def _observe_for_plan(cluster: Cluster) -> tuple[Observation, dict[str, Any]]:
    try:
        obs = observe(cluster.pk)
    except RayError as exc:
        raise ValidationError(
            {"cluster": [f"Cluster {cluster.name} could not be observed, so no plan: {exc}"]}
        ) from exc
    cluster.refresh_from_db()
    return obs, input_from_observation(cluster, obs)


def plan_create(*, actor: Any, cluster: Cluster, trigger: str = "manual", source: str = "api") -> CompactionPlan:
    """Observe the cluster, then plan from that observation (never from a stored one that may be older than the
    last deployment)."""
    obs, state = _observe_for_plan(cluster)
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
    return _save_plan(actor=actor, cluster=cluster, state=state, observed_at=obs.at, trigger=trigger, source=source)


@transaction.atomic
def _save_plan(
    *, actor: Any, cluster: Cluster, state: dict, observed_at: Any, trigger: str, source: str
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
        plan.state = CompactionPlan.State.EXECUTING
        plan.started_at = timezone.now()
        plan.save(update_fields=["state", "started_at"])
        audit_record(
            actor=actor, action="compaction.execute", obj=plan, source=source, after={"nodes": plan.nodes_to_drain}
        )

        transaction.on_commit(lambda: enqueue("workers.tasks.compaction.execute_plan", plan.pk))
    return plan


class ExecutionError(Exception):
    pass


def _drain(cluster: Cluster, plan: CompactionPlan) -> None:
    """Mark every node of the plan as draining, together: Serve places no replacement on a node about to drain."""
    message = f"compaction plan {plan.pk}"
    method = drain_method(cluster)
    if method == "gcs":
        drain_nodes(gcs_address=cluster.gcs_address, node_ids=plan.nodes_to_drain, reason_message=message)
        plan.drain_method = "gcs"
    elif method == "job":
        plan.drain_job = drain_nodes_via_job(
            client_for(cluster, timeout=30), node_ids=plan.nodes_to_drain, reason_message=message
        )
        plan.drain_method = "job"
    else:
        raise ExecutionError("the cluster has no dashboard URL and no GCS address")
    plan.save(update_fields=["drain_method", "drain_job"])


def _wait_for_serve(client: Any, plan: CompactionPlan, timeout_s: float, poll_s: float) -> float:
    """Never drain while Serve migrates on its own: wait until it is still, up to timeout_s. Returns the wait."""
    started = time.monotonic()
    while True:
        moving = serve_in_motion(client.get_serve_applications().get("applications") or {})
        if not moving:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise ExecutionError(
                f"Serve kept moving replicas for {timeout_s:.0f} s ({'; '.join(moving[:3])}); nothing was drained"
            )
        plan.steps.filter(state=CompactionStep.State.PENDING).update(
            message=f"waiting for Serve's own replica moves to finish: {'; '.join(moving[:3])}"[:4000]
        )
        time.sleep(poll_s)


def _check_still_valid(cluster: Cluster, plan: CompactionPlan) -> dict[str, Any]:
    """On a fresh observation: the plan's nodes hold no replica it did not plan for, and what they hold fits on
    the nodes it keeps, all at once. Returns the fresh planner input (the baseline the outcome is measured on)."""
    _, state = _observe_for_plan(cluster)
    planned = {r["id"] for r in plan.input.get("replicas", []) if r["node"] in set(plan.nodes_to_drain)}
    alive = {n["id"] for n in state["nodes"]}
    gone = [n[:12] for n in plan.nodes_to_drain if n not in alive]
    if gone:
        raise ExecutionError(f"node(s) {', '.join(gone)} are gone or already drained; plan again")
    new = [r for r in state["replicas"] if r["node"] in set(plan.nodes_to_drain) and r["id"] not in planned]
    if new:
        raise ExecutionError(
            f"the cluster changed since the plan: {len(new)} replica(s) arrived on the nodes to drain "
            f"({', '.join(sorted({r['app'] for r in new})[:3])}); plan again"
        )
    nodes, replicas = parse_state(state)
    if relocate(nodes, replicas, plan.nodes_to_drain) is None:
        raise ExecutionError("the replicas on the nodes to drain no longer fit on the nodes the plan keeps; plan again")
    return state


def _snapshot(client: Any) -> tuple[dict, dict[str, dict]]:
    """Serve's applications, and every replica by id with its deployment, node and state."""
    apps = client.get_serve_applications().get("applications") or {}
    reps = {}
    for app_name, app in apps.items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            for rep in dep.get("replicas") or []:
                reps[rep.get("replica_id", "")] = {
                    "key": f"{app_name}/{dep_name}",
                    "node": rep.get("node_id") or "",
                    "state": rep.get("state", ""),
                }
    return apps, reps


def _running_counts(apps: dict) -> dict[str, int]:
    out = {}
    for app_name, app in apps.items():
        for dep_name, dep in (app.get("deployments") or {}).items():
            out[f"{app_name}/{dep_name}"] = sum(1 for r in dep.get("replicas") or [] if r.get("state") == "RUNNING")
    return out


def verify_moves(
    plan_moves: list[dict], baseline: dict[str, Any], drained: list[str], seen: dict[str, dict], final: dict[str, dict]
) -> dict[str, Any]:
    """Per replica: did it move at most once, and end on a node the plan keeps? Planned against actual placement.

    ``baseline``: the planner input right before the drain; ``seen``: every replica id seen while executing, with
    the nodes it was seen on; ``final``: the running replicas at the end. Serve moves a replica by starting a
    replacement (a new id) and stopping the old one, so a move is a baseline replica that is gone, paired with a
    new replica of its deployment; a replacement that was itself replaced is a second move.
    """
    drain = set(drained)
    planned_to = {m["replica"]: m["to"] for m in plan_moves}
    before = {r["id"]: r for r in baseline["replicas"]}
    gone_by_key: dict[str, list[dict]] = {}
    for rid, rep in sorted(before.items()):
        if rid not in final:
            gone_by_key.setdefault(f"{rep['app']}/{rep['deployment']}", []).append(rep)
    new_by_key: dict[str, list[tuple[str, str]]] = {}
    for rid, rep in sorted(final.items()):
        if rid not in before:
            new_by_key.setdefault(rep["key"], []).append((rid, rep["node"]))
    transient = sorted(rid for rid in seen if rid not in before and rid not in final)
    rows, problems = [], []
    for key in sorted(set(gone_by_key) | set(new_by_key)):
        gone, new = gone_by_key.get(key, []), list(new_by_key.get(key, []))
        # Pair each moved replica with a replacement, those that landed where the plan said first.
        pairs: list[tuple[dict, tuple[str, str] | None]] = []
        rest = []
        for rep in gone:
            match = next((n for n in new if n[1] == planned_to.get(rep["id"])), None)
            if match:
                new.remove(match)
                pairs.append((rep, match))
            else:
                rest.append(rep)
        for rep in rest:
            pairs.append((rep, new.pop(0) if new else None))
        for rep, repl in pairs:
            actual = repl[1] if repl else ""
            rows.append(
                {
                    "replica": rep["id"],
                    "app": rep["app"],
                    "deployment": rep["deployment"],
                    "from": rep["node"],
                    "planned_to": planned_to.get(rep["id"], ""),
                    "actual_to": actual,
                    "replacement": repl[0] if repl else "",
                    "as_planned": bool(actual) and actual == planned_to.get(rep["id"]),
                }
            )
            if rep["node"] not in drain:
                problems.append(f"{key}: replica {rep['id']} on a kept node was moved")
            if actual in drain:
                problems.append(f"{key}: replacement {repl[0]} landed on a drained node")
            if not repl:
                problems.append(f"{key}: replica {rep['id']} left and nothing replaced it")
        for rid, node in new:
            problems.append(f"{key}: extra replica {rid} started on {node[:12]}")
    for rid in transient:
        key = seen[rid]["key"]
        problems.append(f"{key}: replica {rid} started and was stopped again (a second move)")
    moved_twice = len(transient) + sum(1 for r in rows if r["actual_to"] in drain)
    return {
        "replicas": rows,
        "moves_planned": len(plan_moves),
        "moves_made": len(rows),
        "as_planned": sum(1 for r in rows if r["as_planned"]),
        "moved_twice": moved_twice,
        "problems": problems,
        "final": [{"id": rid, "key": rep["key"], "node": rep["node"]} for rid, rep in sorted(final.items())],
    }


def run_plan(
    plan_id: int, *, step_timeout_s: float = STEP_TIMEOUT_S, poll_s: float = 0.5, settle_timeout_s: float = 300
) -> str:
    """Execute a plan: wait until Serve is still, check the plan on a fresh observation, drain all its nodes
    together, wait until they are empty and every deployment runs its count, then verify each replica moved at
    most once and ended on a node the plan keeps."""
    plan = CompactionPlan.objects.select_related("cluster").get(pk=plan_id)
    if plan.state != CompactionPlan.State.EXECUTING:
        return f"not executing ({plan.state})"
    cluster = plan.cluster
    client = client_for(cluster)
    failure = ""
    outcome: dict[str, Any] = {}
    steps = {s.node_id: s for s in plan.steps.order_by("index")}
    try:
        outcome["waited_for_serve_s"] = round(_wait_for_serve(client, plan, settle_timeout_s, poll_s), 1)
        baseline = _check_still_valid(cluster, plan)
        apps, seen = _snapshot(client)
        targets = _running_counts(apps)
        seen = {rid: dict(rep, nodes=[rep["node"]]) for rid, rep in seen.items()}
        now = timezone.now()
        for step in steps.values():
            step.state, step.started_at, step.message = CompactionStep.State.DRAINING, now, "draining"
        CompactionStep.objects.bulk_update(list(steps.values()), ["state", "started_at", "message"])
        started = time.monotonic()
        _drain(cluster, plan)
        outcome["drain_call_s"] = round(time.monotonic() - started, 1)
        emptied: dict[str, float] = {}
        while True:
            apps, now_reps = _snapshot(client)
            for rid, rep in now_reps.items():
                entry = seen.setdefault(rid, dict(rep, nodes=[]))
                if rep["node"] and rep["node"] not in entry["nodes"]:
                    entry["nodes"].append(rep["node"])
            occupied = {rep["node"] for rep in now_reps.values()}
            for node_id, step in steps.items():
                if node_id not in occupied and node_id not in emptied:
                    emptied[node_id] = time.monotonic() - started
                    step.state, step.finished_at = CompactionStep.State.SUCCEEDED, timezone.now()
                    step.message = f"emptied {emptied[node_id]:.1f} s after the drain started"
                    step.save(update_fields=["state", "finished_at", "message"])
            counts = _running_counts(apps)
            short = [k for k, want in targets.items() if counts.get(k, 0) < want]
            not_running = [name for name, app in apps.items() if app.get("status") != "RUNNING"]
            if len(emptied) == len(steps) and not short and not not_running:
                break
            if time.monotonic() - started > step_timeout_s:
                why = [f"{n[:12]} still holds replicas" for n in steps if n not in emptied]
                why += [f"{k} runs {counts.get(k, 0)} of {targets[k]}" for k in short[:3]]
                why += [f"{n} is {apps[n].get('status')}" for n in not_running[:3]]
                raise TimeoutError(f"not done {step_timeout_s:.0f} s after the drain: {'; '.join(why)}")
            time.sleep(poll_s)
        final = {rid: rep for rid, rep in now_reps.items() if rep["state"] == "RUNNING"}
        outcome.update(verify_moves(plan.moves, baseline, plan.nodes_to_drain, seen, final))
        outcome["seconds_per_node"] = {n: round(s, 1) for n, s in emptied.items()}
        outcome["total_s"] = round(time.monotonic() - started, 1)
        if outcome["problems"]:
            failure = "verification: " + "; ".join(outcome["problems"][:5])
    except (DrainError, RayError, TimeoutError, ExecutionError, ValidationError) as exc:
        failure = error_text(exc) if isinstance(exc, ValidationError) else str(exc)
        for step in steps.values():
            if step.state in (CompactionStep.State.PENDING, CompactionStep.State.DRAINING):
                step.state = (
                    CompactionStep.State.FAILED
                    if step.state == CompactionStep.State.DRAINING
                    else CompactionStep.State.SKIPPED
                )
                step.message = failure[:4000] if step.state == CompactionStep.State.FAILED else "not drained"
                step.finished_at = timezone.now()
                step.save(update_fields=["state", "message", "finished_at"])
    plan.state = CompactionPlan.State.FAILED if failure else CompactionPlan.State.SUCCEEDED
    plan.error = failure[:4000]
    plan.outcome = outcome
    plan.finished_at = timezone.now()
    plan.save(update_fields=["state", "error", "outcome", "finished_at"])
    audit_record(
        actor="system (compaction)",
        action=f"compaction.{plan.state}",
        obj=plan,
        source="task",
        after={
            "error": plan.error,
            "nodes": plan.nodes_to_drain,
            "moves_made": outcome.get("moves_made"),
            "moved_twice": outcome.get("moved_twice"),
        },
    )
    return plan.state


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
    """Beat: suggest or run a compaction per the cluster's policy, never during a deploy, another compaction or
    Serve's own replica moves. Observes the cluster first (only when nothing else rules a plan out)."""
    cluster = Cluster.objects.get(pk=cluster_id)
    if cluster.compaction_policy == "off":
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
    try:
        obs, state = _observe_for_plan(cluster)
    except ValidationError:
        return "unreachable"
    if serve_in_motion(obs.apps):
        return "Serve is moving replicas"
    if len(run_planner(state)["nodes_to_drain"]) < max(1, cluster.compaction_threshold):
        return "nothing to free"
    latest = CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.PLANNED).first()
    if cluster.compaction_policy == "suggest":
        if latest and latest.input == state:
            return "suggested already"
        _save_plan(
            actor="system (policy)", cluster=cluster, state=state, observed_at=obs.at, trigger="suggest", source="task"
        )
        return "suggested"
    if not in_window(cluster.compaction_window):
        return "outside window"
    plan = _save_plan(
        actor="system (policy)", cluster=cluster, state=state, observed_at=obs.at, trigger="automatic", source="task"
    )
    plan_execute(actor="system (policy)", plan=plan, source="task")
    return "executing"
