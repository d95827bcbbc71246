"""Quota admission: a write is admitted only if the team's demand in every pool stays within its quota."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from rest_framework.exceptions import ValidationError

from apps.applications.spec import demand
from apps.clusters.models import Cluster
from apps.teams.models import Team

from .models import Quota


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    resource: str
    quota: Decimal | None
    in_use: Decimal  # demand of the team's other apps on the cluster
    requested: Decimal  # demand of the app being written

    @property
    def demand(self) -> Decimal:
        return self.in_use + self.requested

    @property
    def fits(self) -> bool:
        return self.requested == 0 or (self.quota is not None and self.demand <= self.quota)


def _fmt(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def team_pool_usage(*, team: Team, cluster: Cluster, spec: dict | None, exclude_app_id: int | None) -> list[PoolUsage]:
    from apps.applications.models import Application

    quotas = {q.pool_id: q.gpus for q in Quota.objects.filter(team=team, cluster=cluster)}
    others = list(
        Application.objects.filter(team=team, cluster=cluster, deleted_at__isnull=True)
        .exclude(pk=exclude_app_id)
        .exclude(current_revision__isnull=True)
        .values_list("current_revision__spec", flat=True)
    )
    out = []
    for pool in cluster.pools.all():
        in_use = sum((demand(s, pool.resource) for s in others), Decimal(0))
        requested = demand(spec, pool.resource) if spec else Decimal(0)
        out.append(PoolUsage(pool.name, pool.resource, quotas.get(pool.pk), in_use, requested))
    return out


def check_admission(*, team: Team, cluster: Cluster, spec: dict, exclude_app_id: int | None = None) -> list[PoolUsage]:
    """Raise a 400 naming pool, demand, quota and use when the spec does not fit; return the usage otherwise."""
    usage = team_pool_usage(team=team, cluster=cluster, spec=spec, exclude_app_id=exclude_app_id)
    refused = [u for u in usage if not u.fits]
    if refused:
        messages = [
            f"team {team.slug} needs {_fmt(u.demand)} {u.resource} in {u.pool} on {cluster.name}, "
            f"quota {_fmt(u.quota) if u.quota is not None else 'none'}, in use {_fmt(u.in_use)}"
            for u in refused
        ]
        raise ValidationError(
            {
                "quota": messages,
                "quota_detail": [
                    {
                        "pool": u.pool,
                        "resource": u.resource,
                        "demand": _fmt(u.demand),
                        "requested": _fmt(u.requested),
                        "quota": _fmt(u.quota) if u.quota is not None else None,
                        "in_use": _fmt(u.in_use),
                    }
                    for u in refused
                ],
            }
        )
    return usage


def pools_used(usage: Iterable[PoolUsage]) -> list[dict]:
    return [
        {"pool": u.pool, "requested": _fmt(u.requested), "demand": _fmt(u.demand), "quota": u.quota and _fmt(u.quota)}
        for u in usage
        if u.requested
    ]


def quota_set(*, actor, team: Team, cluster: Cluster, pool_name: str, gpus, cpus=None, source: str = "api") -> Quota:  # type: ignore[no-untyped-def]
    """Create or change a team's quota in a pool. Lowering it below use refuses growth, never tears down."""
    from django.db import transaction

    from apps.audit.services import audit_record

    pool = cluster.pools.filter(name=pool_name).first()
    if pool is None:
        raise ValidationError({"pool": [f"Cluster {cluster.name} has no pool {pool_name!r}."]})
    with transaction.atomic():
        Cluster.objects.select_for_update().get(pk=cluster.pk)
        quota = Quota.objects.filter(team=team, pool=pool).first()
        before = (
            None
            if quota is None
            else {"gpus": str(quota.gpus), "cpus": None if quota.cpus is None else str(quota.cpus)}
        )
        if quota is None:
            quota = Quota(team=team, cluster=cluster, pool=pool, gpus=gpus, cpus=cpus)
        else:
            quota.gpus, quota.cpus = gpus, cpus
        quota.save()
        audit_record(
            actor=actor,
            team=team,
            action="quota.set",
            obj=quota,
            before=before,
            after={"pool": pool.name, "gpus": str(gpus), "cpus": None if cpus is None else str(cpus)},
            source=source,
        )
    return quota
