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


def request_sync(*, cluster_id: int, trigger: str = "write", force: bool = False) -> None:
    """Record that the desired config changed and enqueue a push once the transaction commits.

    Bursts coalesce: the worker that holds the cluster's lock pushes the newest generation, and
    tasks that find the lock taken leave the work to it.
    """
    Cluster.objects.filter(pk=cluster_id).update(desired_generation=F("desired_generation") + 1)

    def enqueue() -> None:
        from workers.tasks.sync import sync_cluster

        try:
            sync_cluster.delay(cluster_id, trigger, force) if force else sync_cluster.delay(cluster_id, trigger)
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


def poll_claim(*, cluster_id: int, lease_s: float) -> str | None:
    """Ask for Serve's status to be followed until it settles.

    Each call counts as a request the poller must follow (``poll_requests``). Returns a token when no poller holds
    the cluster's poll lease (the caller starts one); None when one runs already (it sees the new request and
    keeps polling). So a cluster has one status poller at most, however many pushes arrive.
    """
    Cluster.objects.filter(pk=cluster_id).update(poll_requests=F("poll_requests") + 1)
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        Cluster.objects.filter(pk=cluster_id)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
        .update(poll_token=token, poll_lease_until=now + timedelta(seconds=lease_s))
    )
    return token if claimed else None


def poll_extend(*, cluster_id: int, token: str, lease_s: float) -> int | None:
    """Keep the poll lease; returns the request count seen, or None when another poller took over."""
    updated = Cluster.objects.filter(pk=cluster_id, poll_token=token).update(
        poll_lease_until=timezone.now() + timedelta(seconds=lease_s)
    )
    if not updated:
        return None
    return Cluster.objects.filter(pk=cluster_id).values_list("poll_requests", flat=True).first()


def poll_release(*, cluster_id: int, token: str, requests_seen: int) -> bool:
    """Let go of the poll lease, unless a push asked for polling since ``requests_seen`` (then keep polling)."""
    return bool(
        Cluster.objects.filter(pk=cluster_id, poll_token=token, poll_requests=requests_seen).update(
            poll_token="", poll_lease_until=None
        )
    )


def scrape_claim(*, cluster_id: int, lease_s: float) -> str | None:
    """One scrape per cluster at a time: a lease taken with a conditional UPDATE, expiring if a worker dies."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        Cluster.objects.filter(pk=cluster_id)
        .filter(Q(scrape_owner="") | Q(scrape_lease_until__lt=now))
        .update(scrape_owner=owner, scrape_lease_until=now + timedelta(seconds=lease_s))
    )
    return owner if claimed else None


def scrape_release(*, cluster_id: int, owner: str) -> None:
    Cluster.objects.filter(pk=cluster_id, scrape_owner=owner).update(scrape_owner="", scrape_lease_until=None)


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
    transaction.on_commit(lambda: _take_inventory_soon(cluster.pk))
    return cluster


def _take_inventory_soon(cluster_id: int) -> None:
    """A new cluster is observed at once: its pre-existing apps are listed before anyone deploys."""
    from workers.tasks.sync import reconcile_cluster

    try:
        reconcile_cluster.delay(cluster_id)
    except Exception:  # broker down: the first push takes the inventory anyway, and beat's reconcile too
        import logging

        logging.getLogger(__name__).warning("could not enqueue the inventory of cluster %s", cluster_id, exc_info=True)


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


def unmanaged_remove(*, actor: Any, cluster: Cluster, name: str, source: str = "api") -> dict:
    """Remove an app the control plane did not create: stop carrying it, and push (Ray deletes it).

    Only a staff action does this, and it is audited. Apps deployed with serve.run cannot be removed through
    Serve's declarative API; the refusal says so.
    """
    from rest_framework.exceptions import NotFound

    from apps.core.exceptions import Conflict

    from .selectors import unmanaged_app

    with transaction.atomic():
        cluster = Cluster.objects.select_for_update().get(pk=cluster.pk)
        entry = unmanaged_app(cluster, name)
        if entry is None:
            raise NotFound(f"No app named {name!r} runs on {cluster.name} outside the control plane.")
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
