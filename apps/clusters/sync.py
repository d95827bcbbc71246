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
from workers.clients.ray_dashboard import RayRejected, RayUnavailable, client_for

from .models import Cluster, SyncRun
from .selectors import build_serve_config, same_app_config
from .services import acquire_lock, release_lock

log = logging.getLogger(__name__)

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
        from apps.applications.spec import validate_deploy_config

        validate_deploy_config(merged.config)
    except Exception as exc:  # pydantic ValidationError or dropped keys: the config itself is wrong
        _finish(run, SyncRun.State.FAILED, f"The merged config failed Ray's ServeDeploySchema: {exc}")
        Cluster.objects.filter(pk=cluster.pk).update(pushed_generation=generation, last_failed_hash=merged.hash)
        return "failed"
    if not force and merged.hash == cluster.last_pushed_hash:
        _finish(run, SyncRun.State.SKIPPED, "")
        Cluster.objects.filter(pk=cluster.pk).update(pushed_generation=generation)
        _after_push(cluster, merged.revisions)
        return "skipped"
    try:
        if cluster.kind == Cluster.Kind.KUBERAY:
            _apply_kuberay(cluster, merged.config)
        else:
            client_for(cluster).put_serve_config(merged.config)
    except RayUnavailable as exc:
        _finish(run, SyncRun.State.FAILED, str(exc))
        Cluster.objects.filter(pk=cluster.pk).update(health=Cluster.Health.UNREACHABLE, health_message=str(exc)[:2000])
        raise
    except RayRejected as exc:
        _finish(run, SyncRun.State.FAILED, str(exc))
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


def _apply_kuberay(cluster: Cluster, config: dict) -> None:
    """KubeRay: the same merged config goes into the RayService's spec.serveConfigV2."""
    from apps.clusters.kuberay import ManifestInvalid
    from workers.clients.kuberay import KubeError, KubeRayClient, KubeRejected

    try:
        KubeRayClient(cluster).apply(config)
    except KubeError as exc:
        raise RayUnavailable(str(exc)) from exc
    except (KubeRejected, ManifestInvalid) as exc:
        raise RayRejected(422, str(exc)) from exc


def _serve_status(cluster: Cluster) -> dict:
    if cluster.kind == Cluster.Kind.KUBERAY:
        from apps.clusters.kuberay import serve_status_from_rayservice
        from workers.clients.kuberay import KubeError, KubeRayClient

        try:
            obj = KubeRayClient(cluster).get()
        except KubeError as exc:
            raise RayUnavailable(str(exc)) from exc
        return serve_status_from_rayservice(obj or {})
    return client_for(cluster).get_serve_applications()


def _observe_push(cluster: Cluster, outcome: str, run: SyncRun) -> None:
    from apps.core.observability import PUSH_SECONDS, PUSHES

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


def observe_cluster(cluster_id: int) -> bool:
    """Read Serve's status into observed state. Returns True when every app has settled.

    Raises RayUnavailable when the dashboard cannot be read (and records the cluster as unreachable).
    """
    cluster = Cluster.objects.get(pk=cluster_id)
    try:
        data = _serve_status(cluster)
    except RayUnavailable as exc:
        Cluster.objects.filter(pk=cluster_id).update(health=Cluster.Health.UNREACHABLE, health_message=str(exc)[:2000])
        raise
    except RayRejected as exc:
        Cluster.objects.filter(pk=cluster_id).update(health=Cluster.Health.UNREACHABLE, health_message=str(exc)[:2000])
        raise RayUnavailable(str(exc)) from exc
    ray_apps: dict = data.get("applications") or {}
    try:
        nodes = (
            [
                {k: n.get(k) for k in ("node_id", "node_ip", "state", "is_head_node", "resources_total", "labels")}
                for n in client_for(cluster).list_nodes()
            ]
            if cluster.dashboard_url
            else cluster.nodes
        )
    except (RayUnavailable, RayRejected):
        nodes = cluster.nodes  # keep the last known list; Serve status is what matters here
    merged = build_serve_config(cluster)
    now = timezone.now()
    settled = True
    moves: list[dict] = []
    apps = list(Application.objects.filter(cluster=cluster, deleted_at__isnull=True).select_related("team"))
    for app in apps:
        seen = ray_apps.get(app.serve_name)
        desired = merged.app_configs.get(app.serve_name)
        if app.current_revision_id != app.deployed_revision_id or seen is None:
            app.state = (
                Application.State.PENDING
                if seen is None or app.deployed_revision_id is None
                else Application.State.DEPLOYING
            )
            settled = False
        else:
            app.state = RAY_TO_STATE.get(seen.get("status", ""), Application.State.DEPLOYING)
            if not same_app_config(seen.get("deployed_app_config"), desired) and app.state == Application.State.RUNNING:
                app.state = Application.State.DEPLOYING  # Ray still runs the previous config
            if app.state not in Application.SETTLED:
                settled = False
        new_status = _status_doc(seen)
        if app.state == Application.State.RUNNING and app.current_revision_id == app.deployed_revision_id:
            moves.extend(_replica_moves(app, app.status, new_status, now))
        app.status = new_status
        app.status_message = (seen or {}).get("message", "") or ""
        app.observed_at = now
    Application.objects.bulk_update(apps, ["state", "status", "status_message", "observed_at"], batch_size=500)
    if moves:
        _record_replica_moves(cluster, moves)

    drift = []
    for name, desired in merged.app_configs.items():
        seen = ray_apps.get(name)
        if seen is None or seen.get("status") == "DELETING":
            drift.append({"app": name, "kind": "missing", "detail": "on the desired config but not on the cluster"})
        elif not same_app_config(seen.get("deployed_app_config"), desired):
            drift.append({"app": name, "kind": "changed", "detail": "the cluster runs a different config"})
    unmanaged = sorted(n for n, a in ray_apps.items() if n not in merged.app_configs and a.get("status") != "DELETING")
    for name in unmanaged:
        drift.append({"app": name, "kind": "unexpected", "detail": "on the cluster but not in the control plane"})
    Cluster.objects.filter(pk=cluster_id).update(
        health=Cluster.Health.HEALTHY,
        health_message="",
        last_seen_at=now,
        drift=drift,
        unmanaged_apps=unmanaged,
        nodes=nodes,
    )
    return settled


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
    from apps.compaction.models import CompactionPlan

    ours = CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.EXECUTING).exists()
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
        log.warning("cluster %s drifted: %s; repairing", cluster.name, cluster.drift)
        push_cluster(cluster_id, trigger=SyncRun.Trigger.DRIFT, force=True)
        return "repaired"
    return "in-sync" if not cluster.drift else "drift-flagged"
