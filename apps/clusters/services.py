"""Writes to clusters: registration, pools, the desired generation a write bumps, apps removed from the cluster."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F
from django.http import Http404

from apps.audit.services import audit_record
from apps.core.errors import Conflict
from apps.core.jobs import enqueue

from . import parts
from .models import Cluster, GpuPool
from .selectors import unmanaged_app


def request_sync(*, cluster_id: int, trigger: str = "write", force: bool = False) -> None:
    """Record that the desired config changed and enqueue a push once the transaction commits.

    Bursts coalesce: the worker that holds the cluster's lock pushes the newest generation, and
    tasks that find the lock taken leave the work to it.
    """
    Cluster.objects.filter(pk=cluster_id).update(desired_generation=F("desired_generation") + 1)

    args = (cluster_id, trigger, force) if force else (cluster_id, trigger)
    # broker down: the write is saved and the generation stays pending; beat's reconcile pushes it later
    transaction.on_commit(lambda: enqueue("workers.tasks.sync.sync_cluster", *args))


@transaction.atomic
def cluster_create(*, actor: Any, data: dict, pools: list[dict]) -> Cluster:
    """Register a cluster. ``data`` holds the API's flat fields; those of other apps' parts go to their rows."""
    own, theirs = parts.split(data)
    cluster = Cluster(**own)
    cluster.full_clean()
    cluster.save()  # every part's row is made with its owner's defaults
    for pool in pools:
        p = GpuPool(cluster=cluster, **pool)
        p.full_clean()
        p.save()
    parts.write(cluster, theirs)
    parts.check(cluster)
    audit_record(
        actor=actor, action="cluster.create", obj=cluster, after={"name": cluster.name, "pools": pools_summary(cluster)}
    )
    # A new cluster is observed at once: its pre-existing apps are listed before anyone deploys (broker down: the
    # first push takes the inventory anyway, and beat's reconcile too).
    transaction.on_commit(lambda: enqueue("workers.tasks.sync.reconcile_cluster", cluster.pk))
    return cluster


@transaction.atomic
def cluster_update(*, actor: Any, cluster: Cluster, data: dict, pools: list[dict] | None = None) -> Cluster:
    before = {k: parts.value(cluster, k) for k in data if k != "auth_token"}
    own, theirs = parts.split(data)
    for key, value in own.items():
        setattr(cluster, key, value)
    cluster.full_clean()
    cluster.save()
    if pools is not None:
        keep = []
        for pool in pools:
            obj, _ = GpuPool.objects.update_or_create(
                cluster=cluster, name=pool["name"], defaults={k: v for k, v in pool.items() if k != "name"}
            )
            keep.append(obj.pk)
        cluster.pools.exclude(pk__in=keep).delete()
    parts.write(cluster, theirs)
    parts.check(cluster)
    after = {k: parts.value(cluster, k) for k in data if k != "auth_token"}
    audit_record(actor=actor, action="cluster.update", obj=cluster, before=before, after=after)
    request_sync(cluster_id=cluster.pk, trigger="manual")
    return cluster


def pools_summary(cluster: Cluster) -> list[dict]:
    return [{"name": p.name, "resource": p.resource, "capacity": str(p.capacity)} for p in cluster.pools.all()]


def unmanaged_remove(*, actor: Any, cluster: Cluster, name: str, source: str = "api") -> dict:
    """Remove an app the control plane did not create: stop carrying it, and push (Ray deletes it).

    Only a staff action does this, and it is audited. Apps deployed with serve.run cannot be removed through
    Serve's declarative API; the refusal says so.
    """
    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        entry = unmanaged_app(cluster, name)
        if entry is None:
            raise Http404(f"No app named {name!r} runs on {cluster.name} outside the control plane.")
        if not entry["can_remove"]:
            raise Conflict(
                {
                    "detail": f"{name!r} was deployed with serve.run; Serve's declarative API cannot remove it. "
                    "Remove it where it was deployed (serve.delete in its code)."
                }
            )
        preexisting = dict(cluster.preexisting_apps or {})
        preexisting.pop(name, None)
        Cluster.objects.filter(pk=cluster.pk).update(preexisting_apps=preexisting)
        audit_record(
            actor=actor,
            action="cluster.unmanaged_app_remove",
            obj=cluster,
            before={"app": name, "kind": entry["kind"], "route_prefix": entry.get("route_prefix")},
            source=source,
        )
        request_sync(cluster_id=cluster.pk, trigger="manual", force=True)
    return entry


def prune_sync_runs(now: Any = None, batch: int = 5000) -> dict[str, int]:
    """Bound the push history: runs older than settings.SYNC_RUN_RETENTION_DAYS go, and only each cluster's last
    settings.SYNC_RUN_SNAPSHOTS_KEPT runs keep the config they sent (a 10,000-app config is megabytes; a fleet
    pushing every minute would otherwise grow its database by gigabytes a day). A batch at a time."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from apps.core.batches import delete_in_batches, update_in_batches

    from .models import SyncRun

    cutoff = (now or timezone.now()) - timedelta(days=settings.SYNC_RUN_RETENTION_DAYS)
    deleted = delete_in_batches(SyncRun.objects.filter(created_at__lt=cutoff), batch, order="created_at")
    cleared = 0
    keep = settings.SYNC_RUN_SNAPSHOTS_KEPT
    for cluster_id in Cluster.objects.values_list("pk", flat=True):
        newest = SyncRun.objects.filter(cluster_id=cluster_id).order_by("-created_at", "-id")
        edge = newest.values_list("created_at", "id")[keep : keep + 1].first()
        if edge is None:
            continue
        older = SyncRun.objects.filter(cluster_id=cluster_id, created_at__lte=edge[0], id__lte=edge[1]).exclude(
            config_snapshot={}
        )
        cleared += update_in_batches(older, {"config_snapshot": {}}, batch)
    return {"deleted": deleted, "snapshots_cleared": cleared}
