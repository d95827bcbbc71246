"""Reads for applications: the ones a user may see, by id; their replicas as placed on the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from apps.core.ids import parse_id
from apps.teams.selectors import teams_for

from .models import Application


def visible_applications(user: Any) -> QuerySet[Application]:
    """Applications of the teams the user may read (deleted ones included until they are gone)."""
    return Application.objects.filter(team__in=teams_for(user))


def visible_application(user: Any, value: Any, *, live: bool = False) -> Application | None:
    """The application a user-given id names, if the user may see it (``live``: not being deleted); else None."""
    pk = parse_id(value)
    if not pk:
        return None
    qs = visible_applications(user).select_related("team", "cluster", "current_revision", "deployed_revision")
    if live:
        qs = qs.filter(deleted_at__isnull=True)
    return qs.filter(pk=pk).first()


@dataclass(frozen=True)
class PlacedReplica:
    """One replica of a deployment as Ray last reported it, with what each replica of the deployment requires."""

    app: Application
    deployment: str
    replica: dict
    resources: dict  # Ray's required_resources of one replica, as reported (numbers)

    @property
    def node_id(self) -> str:
        return self.replica.get("node_id", "")

    @property
    def running(self) -> bool:
        return self.replica.get("state") == "RUNNING"


def placed_replicas(cluster: Any) -> list[PlacedReplica]:
    """Every replica of the cluster's live applications in their last observed status, in one query."""
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(status={})
        .select_related("team")
        .only("id", "name", "adopted_serve_name", "status", "team__slug")
    )
    out = []
    for app in apps:
        for dep_name, dep in (app.status.get("deployments") or {}).items():
            resources = dep.get("required_resources") or {}
            out.extend(PlacedReplica(app, dep_name, rep, resources) for rep in dep.get("replicas") or [])
    return out
