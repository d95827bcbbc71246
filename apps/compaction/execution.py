"""Executing a plan (the worker's part): wait until Serve is still, check the plan on a fresh observation, drain
its nodes together, follow the replicas until every deployment runs its count, and verify each moved at most once."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.core.errors import error_text
from workers.clients.ray_dashboard import RayError, client_for
from workers.clients.ray_gcs import DrainError, drain_nodes, drain_nodes_via_job

from .inputs import observe_for_plan, serve_in_motion
from .models import CompactionPlan, CompactionStep
from .planner import parse as parse_state
from .planner import relocate
from .services import drain_method

log = logging.getLogger(__name__)

STEP_TIMEOUT_S = 180


class ExecutionError(Exception):
    pass


def _drain(cluster: Cluster, plan: CompactionPlan) -> None:
    """Mark every node of the plan as draining, together: Serve places no replacement on a node about to drain."""
    message = f"compaction plan {plan.pk}"
    method = drain_method(cluster)
    if method == "gcs":
        drain_nodes(
            gcs_address=cluster.compaction_settings.gcs_address, node_ids=plan.nodes_to_drain, reason_message=message
        )
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
    _, state = observe_for_plan(cluster)
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
