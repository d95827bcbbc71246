"""What runs on a cluster before the control plane's first push, and a cluster that does not answer."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from workers.clients.ray_dashboard import RayRejected, RayUnavailable

from .transport import transport_for

log = logging.getLogger(__name__)


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


def _mark_unreachable(cluster: Cluster, exc: Exception) -> None:
    Cluster.objects.filter(pk=cluster.pk).update(health=Cluster.Health.UNREACHABLE, health_message=str(exc)[:2000])
