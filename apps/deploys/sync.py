"""The push, status observation and drift reconcile for one cluster (called by the Celery tasks)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster, SyncRun
from apps.core.observability import PUSH_SECONDS, PUSHES
from apps.servespec import spec
from apps.servespec.ray_schema import diff_app
from workers.clients.ray_dashboard import RayRejected, RayUnavailable

from .config import build_serve_config
from .locks import acquire_lock, release_lock
from .transport import transport_for

log = logging.getLogger(__name__)

MAX_DRIFT_REPAIRS = 3

RAY_TO_STATE = {
    "RUNNING": Application.State.RUNNING,
    "DEPLOYING": Application.State.DEPLOYING,
    "NOT_STARTED": Application.State.DEPLOYING,
    "DEPLOY_FAILED": Application.State.DEPLOY_FAILED,
    "UNHEALTHY": Application.State.UNHEALTHY,
    "DELETING": Application.State.DEPLOYING,
}


@dataclass
class PushResult:
    outcome: str  # pushed | skipped | locked | failed
    runs: list[int]
    settled: bool = True


def push_cluster(cluster_id: int, *, trigger: str = "write", force: bool = False, attempt: int = 0) -> PushResult:
    """Push the newest desired config if this worker can take the cluster's lock.

    Raises RayUnavailable for transient failures (the task retries with backoff). Pushes repeat while
    writes keep arriving, so a burst of writes ends in few pushes and none is lost.
    """
    runs: list[int] = []
    outcome = "locked"
    while True:
        owner = acquire_lock(cluster_id=cluster_id, owner=uuid.uuid4().hex)
        if owner is None:
            return PushResult(outcome, runs)
        # Holding the lock, no other push runs: a run still marked running was left by a worker that died.
        SyncRun.objects.filter(cluster_id=cluster_id, state=SyncRun.State.RUNNING).update(
            state=SyncRun.State.FAILED,
            finished_at=timezone.now(),
            error="abandoned: the worker running this push stopped before it finished; its lock expired",
        )
        try:
            while True:
                cluster = Cluster.objects.get(pk=cluster_id)
                generation = cluster.desired_generation
                outcome = _push_once(cluster, generation, trigger=trigger, force=force, attempt=attempt, runs=runs)
                force = False
                if Cluster.objects.filter(pk=cluster_id, desired_generation=generation).exists():
                    break
        finally:
            release_lock(cluster_id=cluster_id, owner=owner)
        # A write that came in after our last check found the lock taken and left the push to us.
        if not Cluster.objects.filter(pk=cluster_id, desired_generation__gt=generation).exists():
            return PushResult(outcome, runs)


def _push_once(cluster: Cluster, generation: int, *, trigger: str, force: bool, attempt: int, runs: list[int]) -> str:
    if cluster.inventory_taken_at is None:
        # Never push to a cluster before recording what already runs on it: the first PUT would delete it all.
        try:
            take_inventory(cluster)
        except RayUnavailable as exc:
            now = timezone.now()
            run = SyncRun.objects.create(
                cluster=cluster,
                trigger=trigger,
                state=SyncRun.State.FAILED,
                generation=generation,
                attempt=attempt,
                error=f"Not pushed: the apps already on the cluster could not be read first ({exc})",
                started_at=now,
                finished_at=now,
            )
            runs.append(run.pk)
            _mark_unreachable(cluster, exc)
            raise
        cluster.refresh_from_db()
    merged = build_serve_config(cluster)
    now = timezone.now()
    run = SyncRun.objects.create(
        cluster=cluster,
        trigger=trigger,
        state=SyncRun.State.RUNNING,
        generation=generation,
        attempt=attempt,
        config_hash=merged.hash,
        config_snapshot=merged.config,
        app_count=len(merged.config["applications"]),
        started_at=now,
    )
    runs.append(run.pk)
    try:
        spec.validate_deploy_config(merged.config)
    except Exception as exc:  # pydantic ValidationError or dropped keys: the config itself is wrong
        _finish(run, SyncRun.State.FAILED, f"The merged config failed Ray's ServeDeploySchema: {exc}")
        _observe_push(cluster, "invalid", run)
        Cluster.objects.filter(pk=cluster.pk).update(pushed_generation=generation, last_failed_hash=merged.hash)
        return "failed"
    if not force and merged.hash == cluster.last_pushed_hash:
        _finish(run, SyncRun.State.SKIPPED, "")
        _observe_push(cluster, "skipped", run)
        Cluster.objects.filter(pk=cluster.pk).update(pushed_generation=generation)
        _after_push(cluster, merged.revisions)
        return "skipped"
    try:
        transport_for(cluster).put_config(merged.config)
    except RayUnavailable as exc:
        _finish(run, SyncRun.State.FAILED, str(exc))
        _observe_push(cluster, "unreachable", run)
        _mark_unreachable(cluster, exc)
        raise
    except RayRejected as exc:
        _finish(run, SyncRun.State.FAILED, str(exc))
        _observe_push(cluster, "refused", run)
        Cluster.objects.filter(pk=cluster.pk).update(pushed_generation=generation, last_failed_hash=merged.hash)
        return "failed"
    _finish(run, SyncRun.State.SUCCEEDED, "")
    _observe_push(cluster, "succeeded", run)
    Cluster.objects.filter(pk=cluster.pk).update(
        pushed_generation=generation,
        last_pushed_hash=merged.hash,
        last_failed_hash="",
        health=Cluster.Health.HEALTHY,
        health_message="",
        last_seen_at=timezone.now(),
        drift=[],
    )
    _after_push(cluster, merged.revisions)
    return "pushed"


def take_inventory(cluster: Cluster) -> dict:
    """Record the apps that run on the cluster before the control plane's first push.

    Declarative apps are carried unchanged in every push until a staff user adopts or removes them; apps deployed
    with ``serve.run`` (imperative) are listed only: Ray's declarative PUT leaves them alone. Raises
    RayUnavailable when the cluster cannot be read (then nothing is pushed).
    """
    try:
        data = transport_for(cluster).serve_status()
    except RayRejected as exc:
        raise RayUnavailable(str(exc)) from exc
    now = timezone.now()
    found: dict[str, dict] = {}
    # Apps the control plane already manages there (a database restored, a demo restarted) are not strangers.
    managed = {a.serve_name for a in Application.objects.filter(cluster=cluster).select_related("team")}
    for name, seen in (data.get("applications") or {}).items():
        if not isinstance(seen, dict) or seen.get("status") == "DELETING" or name in managed:
            continue
        config = seen.get("deployed_app_config")
        found[name] = {
            "config": config if isinstance(config, dict) else None,
            "source": seen.get("source") or ("declarative" if isinstance(config, dict) else "imperative"),
            "route_prefix": seen.get("route_prefix", (config or {}).get("route_prefix")),
            "status": seen.get("status", ""),
            "seen_at": now.isoformat(),
        }
    with transaction.atomic():
        taken = Cluster.objects.filter(pk=cluster.pk, inventory_taken_at__isnull=True).update(
            inventory_taken_at=now, preexisting_apps=found
        )
        if taken:
            audit_record(
                actor="system (registration)",
                action="cluster.inventory",
                obj=cluster,
                source="task",
                after={
                    "preexisting_apps": sorted(found),
                    "carried": sorted(n for n, a in found.items() if a["config"]),
                },
            )
    if found and taken:
        log.info("cluster %s already runs %d apps; they are carried until adopted or removed", cluster.name, len(found))
    return found


def _observe_push(cluster: Cluster, outcome: str, run: SyncRun) -> None:

    PUSHES.labels(cluster.name, outcome).inc()
    if run.started_at and run.finished_at:
        PUSH_SECONDS.labels(cluster.name).observe((run.finished_at - run.started_at).total_seconds())


def _finish(run: SyncRun, state: str, error: str) -> None:
    run.state = state
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["state", "error", "finished_at"])


def _after_push(cluster: Cluster, revisions: dict[int, int]) -> None:
    """Mark what Ray now has as deployed, and forget deleted apps that the config no longer carries."""
    with transaction.atomic():
        apps = list(Application.objects.filter(pk__in=list(revisions)).only("id", "deployed_revision_id", "state"))
        changed = []
        for app in apps:
            rev = revisions[app.pk]
            if app.deployed_revision_id != rev:
                app.deployed_revision_id = rev
                app.state = Application.State.DEPLOYING
                changed.append(app)
        Application.objects.bulk_update(changed, ["deployed_revision", "state"], batch_size=500)
        gone = Application.objects.filter(cluster=cluster, deleted_at__isnull=False).exclude(pk__in=list(revisions))
        for app in gone.select_related("team"):
            audit_record(
                actor="system (push)",
                team=app.team,
                action="application.removed",
                obj=app,
                source="task",
                before={"name": app.name, "cluster": cluster.name},
            )
        gone.delete()


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
    apps = list(Application.objects.filter(cluster=cluster, deleted_at__isnull=True).select_related("team"))
    settled, diffs = _observe_apps(cluster, apps, ray_apps, merged, now)
    drift = _drift(merged, ray_apps, diffs)
    unmanaged = _unmanaged(cluster, apps, ray_apps, drift)
    Cluster.objects.filter(pk=cluster_id).update(
        health=Cluster.Health.HEALTHY,
        health_message="",
        last_seen_at=now,
        drift=drift,
        unmanaged_apps=unmanaged,
        nodes=nodes,
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


def _mark_unreachable(cluster: Cluster, exc: Exception) -> None:
    Cluster.objects.filter(pk=cluster.pk).update(health=Cluster.Health.UNREACHABLE, health_message=str(exc)[:2000])


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
    for app in apps:
        seen = ray_apps.get(app.serve_name)
        desired = merged.app_configs.get(app.serve_name)
        observed_config = (seen or {}).get("deployed_app_config")
        # Compared by meaning (Ray's schema, defaults, numbers by value), never by text.
        app.config_diff = diff_app(desired, observed_config) if desired and isinstance(observed_config, dict) else []
        diffs[app.serve_name] = app.config_diff
        app.state = _state_of(app, seen)
        if app.state not in Application.SETTLED or app.current_revision_id != app.deployed_revision_id:
            settled = False
        new_status = _status_doc(seen)
        if app.state == Application.State.RUNNING and app.current_revision_id == app.deployed_revision_id:
            moves.extend(_replica_moves(app, app.status, new_status, now))
        starts = _replica_starts(app.status, new_status, now)
        if starts:
            app.replica_starts = _recent_starts(app.replica_starts + starts, now)
        app.status = new_status
        app.status_message = (seen or {}).get("message", "") or ""
        app.observed_at = now
    # Only what changed is written: an idle cluster's poll is a read and one UPDATE of observed_at.
    changed = [
        a for a in apps if (a.state, a.status, a.status_message, a.config_diff, len(a.replica_starts)) != before[a.pk]
    ]
    Application.objects.bulk_update(
        changed, ["state", "status", "status_message", "config_diff", "replica_starts"], batch_size=200
    )
    Application.objects.filter(pk__in=[a.pk for a in apps]).update(observed_at=now)
    if moves:
        _record_replica_moves(cluster, moves)
    return settled, diffs


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
        if name in managed or seen.get("status") == "DELETING":
            continue
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


def _replica_moves(app: Application, old: dict, new: dict, now: Any) -> list[dict]:
    """Replicas that left one node and appeared on another while the app's config stayed the same.

    With RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1, Serve compacts on its own after a quiet period; showing
    those moves next to the control plane's plans keeps the two from working against each other.
    """
    out = []
    for name, dep in (new.get("deployments") or {}).items():
        before = (old.get("deployments") or {}).get(name) or {}
        old_ids = {r["replica_id"]: r.get("node_id", "") for r in before.get("replicas") or []}
        new_ids = {r["replica_id"]: r.get("node_id", "") for r in dep.get("replicas") or []}
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


def reconcile_cluster(cluster_id: int) -> str:
    """Observe, then push if a write is pending or the cluster drifted (per the cluster's drift policy)."""
    try:
        observe_cluster(cluster_id)
    except RayUnavailable:
        return "unreachable"
    cluster = Cluster.objects.get(pk=cluster_id)
    if cluster.lock_owner and cluster.lock_expires_at and cluster.lock_expires_at > timezone.now():
        return "busy"
    if cluster.desired_generation > cluster.pushed_generation:
        push_cluster(cluster_id, trigger=SyncRun.Trigger.RECONCILE)
        return "pushed-pending"
    if cluster.drift and cluster.drift_policy == Cluster.DriftPolicy.REPAIR:
        merged = build_serve_config(cluster)
        if merged.hash == cluster.last_failed_hash:
            return "drift-not-repairable"
        # A difference that a push of the same config does not remove is not drift the push can repair (Ray
        # rewrites something the comparison does not know): after a few tries, flag it and stop pushing.
        repairs = cluster.drift_repairs if cluster.drift_repair_hash == merged.hash else 0
        if repairs >= MAX_DRIFT_REPAIRS:
            return "drift-not-repairable"
        Cluster.objects.filter(pk=cluster_id).update(drift_repair_hash=merged.hash, drift_repairs=repairs + 1)
        log.warning("cluster %s drifted: %s; repairing", cluster.name, [(d["app"], d["kind"]) for d in cluster.drift])
        push_cluster(cluster_id, trigger=SyncRun.Trigger.DRIFT, force=True)
        return "repaired"
    if not cluster.drift and cluster.drift_repairs:
        Cluster.objects.filter(pk=cluster_id).update(drift_repair_hash="", drift_repairs=0)
    return "in-sync" if not cluster.drift else "drift-flagged"
