"""What a plan is made from: the cluster's nodes and Serve's replicas, read fresh (or as last stored), in the
planner's shape, and whether Serve is moving replicas on its own right now."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from apps.applications.models import Application
from apps.applications.selectors import placed_replicas
from apps.clusters.models import Cluster
from apps.deploys.observe import Observation, observe
from apps.metrics.models import MetricsConfig
from apps.rollouts.placement import owner_of
from apps.servespec.spec import to_decimal
from workers.clients.ray_dashboard import RayError

from .models import CompactionStep


def drained_node_ids(cluster: Cluster) -> set[str]:
    """Nodes this control plane drained that Ray still lists: empty, unschedulable, releasable."""
    alive = {n["node_id"] for n in cluster.nodes or [] if n.get("state") == "ALIVE"}
    done = CompactionStep.objects.filter(plan__cluster=cluster, state=CompactionStep.State.SUCCEEDED)
    return set(done.values_list("node_id", flat=True)) & alive


def _gpu_facts(cluster: Cluster) -> tuple[dict[str, list[float]], dict[tuple[str, int], tuple[int, float]]]:
    """Where Ray reads the GPUs (the last node summary, apps.metrics.gpus): each node's cards' memory (MiB, by
    index), and (node, pid) -> (card, MiB held) of each process on them."""
    snapshot = MetricsConfig.objects.filter(pk=cluster.pk).values_list("gpus", flat=True).first() or []
    cards: dict[str, dict[int, float]] = {}
    held: dict[tuple[str, int], tuple[int, float]] = {}
    for g in snapshot:
        if g.get("index") is None:
            continue
        cards.setdefault(g["node_id"], {})[int(g["index"])] = float(g.get("memory_total_mib") or 0)
        for p in g.get("processes") or []:
            held[(g["node_id"], int(p["pid"]))] = (int(g["index"]), float(p.get("memory_mib") or 0))
    ordered = {n: [c[i] for i in sorted(c)] for n, c in cards.items() if sorted(c) == list(range(len(c)))}
    return ordered, held


def _with_gpu_facts(cluster: Cluster, state: dict[str, Any], pids: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The planner's input with the cards' memory and what each replica really holds, where Ray reads them."""
    cards, held = _gpu_facts(cluster)
    if not cards:
        return state
    for n in state["nodes"]:
        if n["id"] in cards:
            n["gpu_cards"] = cards[n["id"]]
    for r in state["replicas"]:
        where = pids.get(r["id"])
        if where is not None and where in held:
            r["card"], r["gpu_memory_mib"] = held[where]
        elif r["node"] in cards and r["resources"].get("GPU"):
            r["gpu_memory_mib"] = 0.0  # on a card Ray reads, holding nothing there
    return state


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
    pids: dict[str, tuple[str, int]] = {}
    for rep in placed_replicas(cluster):
        if rep.node_id in known and rep.running:
            if rep.replica.get("pid"):
                pids[rep.replica["replica_id"]] = (rep.node_id, int(rep.replica["pid"]))
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
    return _with_gpu_facts(cluster, {"nodes": nodes, "replicas": replicas}, pids)


def input_from_observation(cluster: Cluster, obs: Observation) -> dict[str, Any]:
    """The planner's input from one reading of the cluster: every Serve replica there, managed or not (an app
    the control plane does not manage still holds its resources and moves when its node drains)."""
    nodes = _plan_nodes(cluster, obs.nodes)
    known = {n["id"] for n in nodes}
    teams = {a.serve_name: a.team.slug for a in Application.objects.filter(cluster=cluster).select_related("team")}
    replicas = []
    pids: dict[str, tuple[str, int]] = {}
    for app_name, app in sorted(obs.apps.items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            resources = {k: float(to_decimal(v)) for k, v in (dep.get("required_resources") or {}).items()}
            for rep in dep.get("replicas") or []:
                if rep.get("state") == "RUNNING" and rep.get("node_id") in known:
                    if rep.get("pid"):
                        pids[rep["replica_id"]] = (rep["node_id"], int(rep["pid"]))
                    replicas.append(
                        {
                            "id": rep["replica_id"],
                            "node": rep["node_id"],
                            "app": app_name,
                            "deployment": dep_name,
                            "team": teams.get(owner_of(app_name), ""),  # a rollout's sides are its app's team's
                            "resources": resources,
                        }
                    )
    return _with_gpu_facts(cluster, {"nodes": nodes, "replicas": replicas}, pids)


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


def observe_for_plan(cluster: Cluster) -> tuple[Observation, dict[str, Any]]:
    """Observe the cluster now, and the planner's input from that reading."""
    try:
        obs = observe(cluster.pk)
    except RayError as exc:
        raise ValidationError(
            {"cluster": [f"Cluster {cluster.name} could not be observed, so no plan: {exc}"]}
        ) from exc
    cluster.refresh_from_db()
    return obs, input_from_observation(cluster, obs)
