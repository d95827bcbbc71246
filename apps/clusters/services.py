"""Writes to clusters: registration, pools, and the per-cluster push bookkeeping (generation, lock)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import audit_record

from .models import Cluster, GpuPool


def request_sync(*, cluster_id: int, trigger: str = "write") -> None:
    """Record that the desired config changed and enqueue a push once the transaction commits.

    Bursts coalesce: the worker that holds the cluster's lock pushes the newest generation, and
    tasks that find the lock taken leave the work to it.
    """
    Cluster.objects.filter(pk=cluster_id).update(desired_generation=F("desired_generation") + 1)

    def enqueue() -> None:
        from workers.tasks.sync import sync_cluster

        try:
            sync_cluster.delay(cluster_id, trigger)
        except Exception:  # broker down: the write is saved; beat's reconcile pushes it later
            import logging

            logging.getLogger(__name__).warning("could not enqueue push for cluster %s", cluster_id, exc_info=True)

    transaction.on_commit(enqueue)


def acquire_lock(*, cluster_id: int, owner: str | None = None) -> str | None:
    """Claim the cluster's push lock with a conditional UPDATE; the lease expires if a worker dies."""
    owner = owner or uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        Cluster.objects.filter(pk=cluster_id)
        .filter(Q(lock_owner="") | Q(lock_expires_at__lt=now))
        .update(lock_owner=owner, lock_expires_at=now + timedelta(seconds=settings.CLUSTER_LOCK_TTL_S))
    )
    return owner if claimed else None


def release_lock(*, cluster_id: int, owner: str) -> None:
    Cluster.objects.filter(pk=cluster_id, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


@transaction.atomic
def cluster_create(*, actor: Any, data: dict, pools: list[dict]) -> Cluster:
    cluster = Cluster(**data)
    cluster.full_clean()
    cluster.save()
    for pool in pools:
        p = GpuPool(cluster=cluster, **pool)
        p.full_clean()
        p.save()
    audit_record(
        actor=actor, action="cluster.create", obj=cluster, after={"name": cluster.name, "pools": pools_summary(cluster)}
    )
    return cluster


@transaction.atomic
def cluster_update(*, actor: Any, cluster: Cluster, data: dict, pools: list[dict] | None = None) -> Cluster:
    before = {k: getattr(cluster, k) for k in data if k != "auth_token"}
    for key, value in data.items():
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
    after = {k: getattr(cluster, k) for k in data if k != "auth_token"}
    audit_record(actor=actor, action="cluster.update", obj=cluster, before=before, after=after)
    request_sync(cluster_id=cluster.pk, trigger="manual")
    return cluster


def pools_summary(cluster: Cluster) -> list[dict]:
    return [{"name": p.name, "resource": p.resource, "capacity": str(p.capacity)} for p in cluster.pools.all()]
