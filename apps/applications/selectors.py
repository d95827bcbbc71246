"""Reads for applications: the ones a user may see, by id; their replicas as placed on the cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from apps.core.ids import parse_id
from apps.teams.principal import Principal

from .models import Application, serve_app_name


def visible_applications(principal: Principal) -> QuerySet[Application]:
    """Applications of the teams the principal may read (deleted ones included until they are gone)."""
    return principal.restrict(Application.objects.all())


def visible_application(principal: Principal, value: Any, *, live: bool = False) -> Application | None:
    """The application a user-given id names, if the principal may see it (``live``: not being deleted)."""
    pk = parse_id(value)
    if not pk:
        return None
    qs = visible_applications(principal).select_related("team", "cluster", "current_revision", "deployed_revision")
    if live:
        qs = qs.filter(deleted_at__isnull=True)
    return qs.filter(pk=pk).first()


class PlacedReplica(NamedTuple):
    """One replica of a deployment as Ray last reported it, with what each replica of the deployment requires (a
    tuple: a cluster page makes 20,000 of them)."""

    app: PlacedApp
    deployment: str
    replica: dict
    resources: dict  # Ray's required_resources of one replica, as reported (numbers)

    @property
    def node_id(self) -> str:
        return self.replica.get("node_id", "")

    @property
    def running(self) -> bool:
        return self.replica.get("state") == "RUNNING"


@dataclass(frozen=True)
class TeamRef:
    slug: str


class PlacedApp(NamedTuple):
    """What a placed replica says of its application: no model instance (a cluster holds 10,000 of them)."""

    pk: int
    name: str
    serve_name: str
    team: TeamRef


def placed_replicas(cluster: Any) -> list[PlacedReplica]:
    """Every replica of the cluster's live applications in their last observed status, in one query of plain rows."""
    rows = list(
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(status={})
        .annotate(status_text=Cast("status", TextField()))
        .values_list("id", "name", "adopted_serve_name", "team__slug", "status_text")
    )
    # The statuses as text, decoded in one call: 10,000 small documents decoded one by one (the JSON field's own
    # converter) cost twice as much.
    statuses = json.loads("[" + ",".join(row[4] for row in rows) + "]")
    out = []
    teams: dict[str, TeamRef] = {}
    for (pk, name, adopted, slug, _), status in zip(rows, statuses, strict=True):
        team = teams.get(slug) or teams.setdefault(slug, TeamRef(slug))
        app = PlacedApp(pk, name, adopted or serve_app_name(slug, name), team)
        for dep_name, dep in (status.get("deployments") or {}).items():
            resources = dep.get("required_resources") or {}
            out.extend(PlacedReplica(app, dep_name, rep, resources) for rep in dep.get("replicas") or [])
    return out


def own_serve_names(principal: Principal, cluster_ids: list[int] | None = None) -> dict[int, set[str]]:
    """Per cluster (``None``: every cluster), the Serve names of the principal's teams' applications there (deleted
    ones too, until gone): what a team may read of the cluster's shared state (drift, push errors, incidents)."""
    out: dict[int, set[str]] = {c: set() for c in cluster_ids or []}
    apps = Application.objects.all() if cluster_ids is None else Application.objects.filter(cluster_id__in=cluster_ids)
    rows = principal.restrict(apps).select_related("team")
    for app in rows.only("id", "name", "cluster_id", "adopted_serve_name", "team__slug"):
        out.setdefault(app.cluster_id, set()).add(app.serve_name)
    return out
