"""Reads that only pages make: a team's quota rows and its GPU-hours showback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.metrics.sources import query
from apps.quotas.models import Quota
from apps.quotas.selectors import usage_for
from apps.quotas.services import fmt
from apps.servespec.demand import demand
from apps.teams.models import Team


def quota_rows(team: Team) -> list[dict]:
    """Per cluster and pool: quota, what the team's apps may use (demand), bar widths, apps using it."""
    apps = list(
        Application.objects.filter(team=team, deleted_at__isnull=True, current_revision__isnull=False).select_related(
            "cluster", "current_revision"
        )
    )
    cluster_ids = {a.cluster_id for a in apps} | set(
        Quota.objects.filter(team=team).values_list("cluster_id", flat=True)
    )
    rows = []
    usage_of = usage_for((team.pk, c) for c in cluster_ids)
    grants = {
        (q.cluster_id, q.pool.name): q for q in Quota.objects.filter(team=team).select_related("pool") if q.starter
    }
    for cluster in Cluster.objects.filter(pk__in=cluster_ids).order_by("name"):
        for usage in usage_of[(team.pk, cluster.pk)]:
            users = []
            for app in apps:
                if app.cluster_id == cluster.pk:
                    amount = demand(app.current_revision.spec, usage.resource)
                    if amount:
                        users.append((app, fmt(amount)))
            if usage.quota is None and not users:
                continue
            scale = max(usage.quota or Decimal(0), usage.in_use, Decimal("0.0001"))
            rows.append(
                {
                    "cluster": cluster,
                    "pool": usage.pool,
                    "resource": usage.resource,
                    "quota": fmt(usage.quota) if usage.quota is not None else None,
                    "allocated": fmt(usage.in_use),
                    "over": usage.quota is not None and usage.in_use > usage.quota,
                    "pct": int(min(usage.in_use, scale) / scale * 100),
                    "quota_pct": int((usage.quota or 0) / scale * 100),
                    "apps": users,
                    "starter": grants.get((cluster.pk, usage.pool)),
                    "ended_at": usage.ended_at,
                }
            )
    return rows


def showback(team: Team, apps: list[Application]) -> dict:
    """GPU-hours allocated per day and application over the last 7 days (from the stored allocation series)."""

    now = timezone.now()
    start = (now - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [start + timedelta(days=i) for i in range(7)]
    rows: dict[str, dict[int, float]] = {}
    clusters = list({a.cluster_id: a.cluster for a in apps}.values())
    for s in query("gpu_hours", cluster=clusters, start=start, end=now, step=86400, now=now, team=team.slug):
        rows.setdefault(s["labels"]["application"], {}).update({int(ts): v for ts, v in s["points"]})
    table = [
        (app, [round(per_day.get(int(d.timestamp()), 0.0), 2) for d in days]) for app, per_day in sorted(rows.items())
    ]
    totals = [round(sum(r[1][i] for r in table), 2) for i in range(len(days))]
    labels = [datetime.fromtimestamp(d.timestamp(), tz=UTC).strftime("%m-%d") for d in days]
    return {"days": labels, "rows": table, "totals": totals}
