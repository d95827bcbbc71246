"""Observation: what Ray runs, read into observed state (apps, replicas, drift, unmanaged apps), and held to what
was admitted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils import timezone

from apps.applications.models import Application
from apps.clusters.models import Cluster, SyncRun
from apps.core.jobs import enqueue
from apps.rollouts.placement import owner_of
from apps.servespec import demand
from apps.servespec.ray_schema import diff_app
from workers.clients.ray_dashboard import RayRejected, RayUnavailable

from . import isolation
from .config import build_serve_config
from .inventory import _mark_unreachable, take_inventory
from .transport import transport_for

log = logging.getLogger(__name__)


RAY_TO_STATE = {
    "RUNNING": Application.State.RUNNING,
    "DEPLOYING": Application.State.DEPLOYING,
    "NOT_STARTED": Application.State.DEPLOYING,
    "DEPLOY_FAILED": Application.State.DEPLOY_FAILED,
    "UNHEALTHY": Application.State.UNHEALTHY,
    "DELETING": Application.State.DEPLOYING,
}


@dataclass(frozen=True)
class Observation:
    """One reading of a cluster: Serve's applications by name (as Ray reports them), its nodes, and when."""

    settled: bool
    apps: dict
    nodes: list[dict]
    at: Any


def observe_cluster(cluster_id: int) -> bool:
    """Read Serve's status into observed state. Returns True when every app has settled.

    Raises RayUnavailable when the dashboard cannot be read (and records the cluster as unreachable).
    """
    return observe(cluster_id).settled


def observe(cluster_id: int) -> Observation:
    """observe_cluster, returning what was read (what a compaction plan is made from)."""
    cluster = Cluster.objects.get(pk=cluster_id)
    transport = transport_for(cluster)
    ray_apps = _read_serve_status(cluster, transport)
    nodes = _read_nodes(cluster, transport)
    merged = build_serve_config(cluster)
    now = timezone.now()
    apps = list(
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True).select_related(
            "team", "deployed_revision", "good_revision"
        )
    )
    settled, diffs = _observe_apps(cluster, apps, ray_apps, merged, now)
    _hold_to_admission(cluster, apps, ray_apps)
    drift = _drift(merged, ray_apps, diffs)
    unmanaged = _unmanaged(cluster, apps, ray_apps, drift)
    # Only observe writes these: the JSON of fifty nodes is not rewritten every 20 s when nothing in it changed.
    fresh = {"drift": drift, "unmanaged_apps": unmanaged, "nodes": nodes}
    changed = {k: v for k, v in fresh.items() if getattr(cluster, k) != v}
    Cluster.objects.filter(pk=cluster_id).update(
        health=Cluster.Health.HEALTHY, health_message="", last_seen_at=now, **changed
    )
    return Observation(settled=settled, apps=ray_apps, nodes=nodes, at=now)


def _read_serve_status(cluster: Cluster, transport: Any) -> dict:
    """Serve's applications by name (taking the inventory first on a cluster never read); unreachable is recorded."""
    try:
        if cluster.inventory_taken_at is None:
            take_inventory(cluster)
            cluster.refresh_from_db()
        data = transport.serve_status()
    except RayUnavailable as exc:
        _mark_unreachable(cluster, exc)
        raise
    except RayRejected as exc:  # a status read that is refused is as good as none
        _mark_unreachable(cluster, exc)
        raise RayUnavailable(str(exc)) from exc
    return data.get("applications") or {}


def _read_nodes(cluster: Cluster, transport: Any) -> list[dict]:
    """Ray's nodes, or the last known list when they cannot be listed (Serve's status is what matters here)."""
    try:
        listed = transport.nodes()
    except (RayUnavailable, RayRejected):
        return cluster.nodes
    if listed is None:
        return cluster.nodes
    keep = ("node_id", "node_ip", "state", "is_head_node", "resources_total", "labels")
    return [{k: n.get(k) for k in keep} for n in listed]


def _observe_apps(
    cluster: Cluster, apps: list[Application], ray_apps: dict, merged: Any, now: Any
) -> tuple[bool, dict[str, list]]:
    """Each managed app's state, status and config diff from what Ray reports; writes only what changed.

    Returns whether every app settled, and each app's diff by Serve name.
    """
    settled = True
    moves: list[dict] = []
    diffs: dict[str, list] = {}
    before = {
        app.pk: (app.state, app.status, app.status_message, app.config_diff, len(app.replica_starts)) for app in apps
    }
    never_observed = {app.pk for app in apps if app.observed_at is None}
    for app in apps:
        seen = ray_apps.get(app.serve_name)
        desired = merged.app_configs.get(app.serve_name)
        observed_config = (seen or {}).get("deployed_app_config")
        # Compared by meaning (Ray's schema, defaults, numbers by value), never by text.
        app.config_diff = diff_app(desired, observed_config) if desired and isinstance(observed_config, dict) else []
        diffs[app.serve_name] = app.config_diff
        app.state = _state_of(app, seen)
        held = app.serve_name in merged.held_back
        if held:
            app.state = Application.State.DEPLOY_FAILED  # its current revision is left out; the fault says why
        if app.state not in Application.SETTLED or (app.current_revision_id != app.deployed_revision_id and not held):
            settled = False
        new_status = _status_doc(seen)
        if app.state == Application.State.RUNNING and app.current_revision_id == app.deployed_revision_id:
            moves.extend(_replica_moves(app, app.status, new_status, now))
        carried = _carried(app.status or {}, new_status) if new_status else None
        if carried:
            new_status["settled"] = carried
        starts = _replica_starts(app.status, new_status, now)
        if starts:
            app.replica_starts = _recent_starts(app.replica_starts + starts, now)
        app.status = new_status
        app.status_message = app.fault if held else (seen or {}).get("message", "") or ""
        app.observed_at = now
    # Only what changed is written: an idle cluster's poll writes no app row (the cluster's last_seen_at says when
    # the unchanged ones were read: Application.last_observed_at).
    changed = [
        a
        for a in apps
        if (a.state, a.status, a.status_message, a.config_diff, len(a.replica_starts)) != before[a.pk]
        or a.pk in never_observed
    ]
    Application.objects.bulk_update(
        changed, ["state", "status", "status_message", "config_diff", "replica_starts", "observed_at"], batch_size=200
    )
    if moves:
        _record_replica_moves(cluster, moves)
    return settled, diffs


def _hold_to_admission(cluster: Cluster, apps: list[Application], ray_apps: dict) -> None:
    """Ray's own figure for each running app (what it reports it applied: options from the code where the config
    is silent, deployments the config does not list, bundles, gangs, surge, deployment actors) against what was
    admitted from its config. An app that runs more is held back like a refused one (its last good revision runs,
    or nothing of it), so a 0.5 GPU quota never runs 3 GPUs for longer than one observation and one push."""
    pooled = {p.resource for p in cluster.pools.all()}
    faults: dict[str, str] = {}
    for app in apps:
        seen = ray_apps.get(app.serve_name) or {}
        deployments = seen.get("deployments")
        if not deployments or app.deployed_revision is None or seen.get("status") == "DELETING":
            continue
        ray = demand.from_ray(deployments)
        admitted = demand.reservations(app.deployed_revision.spec)
        observed = {r: sum((x.total(r) for x in ray), Decimal(0)) for r in pooled}
        allowed = {r: sum((x.total(r) for x in admitted), Decimal(0)) for r in pooled}
        good = app.good_revision
        if (app.config_diff or seen.get("status") != "RUNNING") and good and good.pk != app.deployed_revision_id:
            # Ray has not applied the pushed config yet (a scale-down read before Ray took it still shows the old
            # replicas): the last good revision was admitted too, so either one's figure is within the quota.
            before = demand.reservations(good.spec)
            for r in pooled:
                allowed[r] = max(allowed[r], sum((x.total(r) for x in before), Decimal(0)))
        figure = {r: fmt(v) for r, v in observed.items() if v}
        if figure != app.observed_demand:
            Application.objects.filter(pk=app.pk).update(observed_demand=figure)
        over = {r: v for r, v in observed.items() if v > allowed[r]}
        if over and app.fault_revision_id != app.deployed_revision_id:
            parts = ", ".join(
                f"{x.path.removeprefix('deployments.')}: {x.count} x {fmt(x.per_unit.get(r, Decimal(0)))} {r}"
                for x in ray
                for r in over
                if x.per_unit.get(r)
            )
            asked = ", ".join(f"{fmt(v)} {r} (admitted {fmt(allowed[r])})" for r, v in over.items())
            faults[app.serve_name] = (
                f"Ray runs {asked} for this app ({parts}): a deployment its config does not list, or an option "
                "the config leaves to the code, runs as the code says. List every deployment in the config with "
                "its replicas and resources."
            )
        elif not over and seen.get("status") == "RUNNING" and app.good_revision_id != app.deployed_revision_id:
            Application.objects.filter(pk=app.pk).update(good_revision_id=app.deployed_revision_id)
    if faults:
        isolation.hold_back(cluster=cluster, faults=faults, source="Ray runs more than was admitted")
        enqueue("workers.tasks.sync.sync_cluster", cluster.pk, SyncRun.Trigger.WRITE)


def fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


REPLICA_STARTS_KEPT = 50


def _replica_starts(old: dict, new: dict, now: Any) -> list[dict]:
    """Replicas Ray started while the app's deployed config stayed the same (Ray's last_deployed_time_s): restarts
    after a crash, a failed health check, a node lost or a drain. A deploy's own new replicas are not counted."""
    if not old or not new or old.get("last_deployed_time_s") != new.get("last_deployed_time_s"):
        return []
    out = []
    for name, dep in (new.get("deployments") or {}).items():
        known = {r.get("replica_id") for r in ((old.get("deployments") or {}).get(name) or {}).get("replicas") or []}
        if not known:
            continue  # nothing seen before for it: no way to tell a start from the first sight
        for rep in dep.get("replicas") or []:
            if rep.get("replica_id") and rep["replica_id"] not in known:
                out.append({"t": now.timestamp(), "deployment": name, "replica_id": rep["replica_id"]})
    return out


def _recent_starts(starts: list[dict], now: Any) -> list[dict]:
    keep_after = now.timestamp() - 86400
    return [s for s in starts or [] if s.get("t", 0) >= keep_after][-REPLICA_STARTS_KEPT:]


def _state_of(app: Application, seen: dict | None) -> str:
    if app.current_revision_id != app.deployed_revision_id or seen is None:
        if seen is None or app.deployed_revision_id is None:
            return Application.State.PENDING
        return Application.State.DEPLOYING
    state = RAY_TO_STATE.get(seen.get("status", ""), Application.State.DEPLOYING)
    if app.config_diff and state == Application.State.RUNNING:
        return Application.State.DEPLOYING  # Ray runs something else than what we asked
    return state


def _drift(merged: Any, ray_apps: dict, diffs: dict[str, list]) -> list[dict]:
    """Desired apps missing from the cluster or running another config."""
    drift = []
    for name, desired in merged.app_configs.items():
        seen = ray_apps.get(name)
        if seen is None or seen.get("status") == "DELETING":
            drift.append({"app": name, "kind": "missing", "detail": "on the desired config but not on the cluster"})
            continue
        observed_config = seen.get("deployed_app_config")
        diff = diffs[name] if name in diffs else diff_app(desired, observed_config) if observed_config else []
        if diff:
            fields = ", ".join(d["field"] for d in diff[:5])
            drift.append(
                {
                    "app": name,
                    "kind": "changed",
                    "detail": f"the cluster runs a different config ({fields})",
                    "diff": diff,
                }
            )
    return drift


def _unmanaged(cluster: Cluster, apps: list[Application], ray_apps: dict, drift: list[dict]) -> list[dict]:
    """Apps on the cluster the control plane did not create; unexpected ones are added to ``drift``."""
    managed = {app.serve_name for app in apps} | {
        a.serve_name
        for a in Application.objects.filter(cluster=cluster, deleted_at__isnull=False).select_related("team")
    }
    preexisting = cluster.preexisting_apps or {}
    unmanaged = []
    for name, seen in sorted(ray_apps.items()):
        if owner_of(name) in managed or seen.get("status") == "DELETING":
            continue  # an app's own, or the new version and splitter its rollout placed beside it
        config = seen.get("deployed_app_config")
        if name in preexisting and (preexisting[name] or {}).get("config"):
            kind = "preexisting"
        elif seen.get("source") == "imperative" or not isinstance(config, dict):
            kind = "imperative"  # deployed with serve.run: Ray's declarative PUT leaves it alone
        else:
            kind = "unexpected"
            drift.append({"app": name, "kind": "unexpected", "detail": "on the cluster but not in the control plane"})
        unmanaged.append(
            {
                "name": name,
                "kind": kind,
                "status": seen.get("status", ""),
                "route_prefix": seen.get("route_prefix", (config or {}).get("route_prefix")),
                "config": config if isinstance(config, dict) else None,
            }
        )
    return unmanaged


def _placement(doc: dict) -> dict[str, dict[str, str]] | None:
    """Each deployment's replicas and their nodes, when every replica runs (a settled placement); else None."""
    out: dict[str, dict[str, str]] = {}
    for name, dep in (doc.get("deployments") or {}).items():
        reps = dep.get("replicas") or []
        if any(r.get("state") != "RUNNING" for r in reps):
            return None
        out[name] = {r["replica_id"]: r.get("node_id", "") for r in reps}
    return out


def _carried(old: dict, new: dict) -> dict[str, dict[str, str]] | None:
    """What a reading taken mid-move carries forward: the last settled placement of the same deploy of the app
    (a new deploy starts afresh). None when ``new`` is settled itself (it is its own placement)."""
    if _placement(new) is not None or old.get("last_deployed_time_s") != new.get("last_deployed_time_s"):
        return None
    return old.get("settled") or _placement(old)


def _replica_moves(app: Application, old: dict, new: dict, now: Any) -> list[dict]:
    """Replicas that left one node and appeared on another while the app's config stayed the same.

    With RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1, Serve compacts on its own after a quiet period; showing
    those moves next to the control plane's plans keeps the two from working against each other. Settled
    placements are compared (every replica RUNNING): a reading taken mid-move (the old replica PENDING_MIGRATION,
    its replacement STARTING) is skipped, and the move is counted once, when it is done.
    """
    after = _placement(new)
    before = old.get("settled") or _placement(old)
    if after is None or not before or old.get("last_deployed_time_s") != new.get("last_deployed_time_s"):
        return []
    out = []
    for name, new_ids in after.items():
        old_ids = before.get(name) or {}
        gone = {rid: node for rid, node in old_ids.items() if rid not in new_ids}
        born = {rid: node for rid, node in new_ids.items() if rid not in old_ids}
        if gone and born and len(old_ids) == len(new_ids) and set(gone.values()) != set(born.values()):
            out.append(
                {
                    "at": now.isoformat(),
                    "app": app.serve_name,
                    "deployment": name,
                    "from": sorted({n[:12] for n in gone.values()}),
                    "to": sorted({n[:12] for n in born.values()}),
                    "replicas": len(born),
                }
            )
    return out


def _record_replica_moves(cluster: Cluster, moves: list[dict]) -> None:
    # A plan executing on the cluster made these moves (compaction sits above deploys: its rows through the relation).
    ours = cluster.compaction_plans.filter(state="executing").exists()
    for move in moves:
        move["by"] = "control plane compaction" if ours else "Serve (or Ray) on its own"
    current = Cluster.objects.filter(pk=cluster.pk).values_list("replica_moves", flat=True).first() or []
    Cluster.objects.filter(pk=cluster.pk).update(replica_moves=(current + moves)[-50:])


def _status_doc(seen: dict | None) -> dict:
    if not seen:
        return {}
    deployments = {}
    for name, dep in (seen.get("deployments") or {}).items():
        deployments[name] = {
            "status": dep.get("status", ""),
            "message": (dep.get("message") or "")[:2000],
            "target_num_replicas": dep.get("target_num_replicas"),
            "required_resources": dep.get("required_resources") or {},
            "replicas": [
                {
                    "replica_id": r.get("replica_id", ""),
                    "node_id": r.get("node_id", ""),
                    "node_ip": r.get("node_ip", ""),
                    "state": r.get("state", ""),
                    "actor_id": r.get("actor_id", ""),
                    "pid": r.get("pid"),  # what NVML names a process by (apps.metrics.gpus)
                }
                for r in dep.get("replicas") or []
            ],
        }
    return {
        "status": seen.get("status", ""),
        "message": (seen.get("message") or "")[-4000:],
        "last_deployed_time_s": seen.get("last_deployed_time_s"),
        "deployments": deployments,
    }
