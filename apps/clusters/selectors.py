"""Reads about clusters: lookups by id, the last push of each, and the apps that run there outside the control
plane."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery

from apps.core.ids import parse_id

from .models import Cluster, SyncRun


def unmanaged_apps(cluster: Cluster) -> list[dict]:
    """Apps on the cluster the control plane did not create, as last observed.

    ``preexisting``: ran before registration; carried unchanged in every push until adopted or removed.
    ``unexpected``: appeared later, behind the control plane's back; the drift policy applies (repair removes it).
    ``imperative``: deployed with ``serve.run``; Ray's declarative PUT leaves it alone, nothing here can change it.
    """
    observed = {u["name"]: u for u in cluster.unmanaged_apps or [] if isinstance(u, dict) and u.get("name")}
    out = []
    for name, pre in sorted((cluster.preexisting_apps or {}).items()):
        if not isinstance(pre, dict):
            continue
        seen = observed.pop(name, None)
        config = pre.get("config")
        out.append(
            {
                "name": name,
                "kind": "preexisting" if config else "imperative",
                "carried": bool(config),
                "status": (seen or {}).get("status") or ("MISSING" if cluster.last_seen_at else "UNKNOWN"),
                "route_prefix": pre.get("route_prefix"),
                "config": config,
                "since": pre.get("seen_at"),
                "can_adopt": bool(config),
                "can_remove": bool(config),
            }
        )
    for name, seen in sorted(observed.items()):
        out.append(
            {
                "name": name,
                "kind": seen.get("kind", "unexpected"),
                "carried": False,
                "status": seen.get("status", ""),
                "route_prefix": seen.get("route_prefix"),
                "config": seen.get("config"),
                "since": None,
                "can_adopt": bool(seen.get("config")),
                "can_remove": seen.get("kind") != "imperative",
            }
        )
    return out


def unmanaged_app(cluster: Cluster, name: str) -> dict | None:
    return next((u for u in unmanaged_apps(cluster) if u["name"] == name), None)


def last_sync_runs(clusters: list[Cluster]) -> dict[int, SyncRun]:
    """Each cluster's latest push attempt, in two queries however many clusters."""
    if not clusters:
        return {}
    latest = SyncRun.objects.filter(cluster=OuterRef("pk")).order_by("-created_at", "-id").values("id")[:1]
    ids = dict(
        Cluster.objects.filter(pk__in=[c.pk for c in clusters])
        .annotate(last_id=Subquery(latest))
        .values_list("pk", "last_id")
    )
    runs = SyncRun.objects.defer("config_snapshot").in_bulk([i for i in ids.values() if i])
    return {pk: runs[i] for pk, i in ids.items() if i in runs}


def cluster_by_id(value: Any) -> Cluster | None:
    """The cluster a user-given id names (an int or its text), or None when it names none."""
    pk = parse_id(value)
    return Cluster.objects.filter(pk=pk).first() if pk else None
