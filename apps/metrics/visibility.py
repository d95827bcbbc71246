"""Which series a principal may read.

Asking by application is already scoped (the application must be the principal's). Asking by cluster returns
every series of the cluster; a team reads its own applications' and its own team's series there, and the
cluster's node series (capacity and utilisation, which belong to no team). A series is shown only from the time
its application (or team) was created, so a team re-created under a deleted team's slug, or an app re-created
under an old name, never reads what its namesake left behind, from either metric source.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.teams.principal import Principal


def since(series: list[dict[str, Any]], born: datetime, step: int) -> list[dict[str, Any]]:
    """The series' points from ``born`` on (a point stands for the ``step`` seconds from its timestamp; the bucket
    in which ``born`` falls is shown, so it may average in up to one step of a deleted namesake's data)."""
    cut = born.timestamp()
    return [{**s, "points": [p for p in s["points"] if p[0] + step > cut]} for s in series]


def for_principal(principal: Principal, cluster: Cluster, series: list[dict[str, Any]], step: int) -> list[dict]:
    """The series of a cluster-wide query that the principal may read (see the module's docstring)."""
    if principal.is_staff:
        return series
    born_app: dict[str, datetime] = {}
    for app in principal.restrict(Application.objects.filter(cluster=cluster)).select_related("team"):
        name = app.serve_name
        born_app[name] = min(born_app.get(name, app.created_at), app.created_at)
    born_team = {t.slug: t.created_at for t in principal.teams()}
    out = []
    for s in series:
        labels = s.get("labels") or {}
        if labels.get("application"):
            born = born_app.get(labels["application"])
        elif labels.get("team"):
            born = born_team.get(labels["team"])
        else:
            out.append(s)  # a node's series: the cluster's, no team's
            continue
        if born is not None:
            out.extend(since([s], born, step))
    return out
