"""Reads for quotas: usage of many (team, cluster) pairs in a fixed number of queries, quotas by pool."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from apps.clusters.models import GpuPool
from apps.servespec.spec import demand
from apps.teams.models import Team

from .models import Quota
from .services import PoolUsage

Pair = tuple[int, int]  # (team id, cluster id)


def usage_for(pairs: Iterable[Pair]) -> dict[Pair, list[PoolUsage]]:
    """Per (team, cluster): each pool's quota and what the team's apps there use, in three queries however many."""
    pairs = set(pairs)
    if not pairs:
        return {}
    team_ids = {t for t, _ in pairs}
    cluster_ids = {c for _, c in pairs}
    pools: dict[int, list[GpuPool]] = defaultdict(list)
    for pool in GpuPool.objects.filter(cluster_id__in=cluster_ids).order_by("name"):
        pools[pool.cluster_id].append(pool)
    quotas = {(q.team_id, q.pool_id): q for q in Quota.objects.filter(team_id__in=team_ids, cluster_id__in=cluster_ids)}
    specs: dict[Pair, list[dict]] = defaultdict(list)
    apps = Team.objects.filter(  # the teams' applications through the reverse relation: quotas sit below them
        pk__in=team_ids,
        applications__cluster_id__in=cluster_ids,
        applications__deleted_at__isnull=True,
        applications__current_revision__isnull=False,
    ).values_list("pk", "applications__cluster_id", "applications__current_revision__spec")
    for team_id, cluster_id, spec in apps:
        specs[(team_id, cluster_id)].append(spec)
    out: dict[Pair, list[PoolUsage]] = {}
    for team_id, cluster_id in pairs:
        rows = []
        for pool in pools[cluster_id]:
            quota = quotas.get((team_id, pool.pk))
            limits = [(pool.resource, quota.gpus if quota else None)]
            if quota is not None and quota.cpus is not None:
                limits.append(("CPU", quota.cpus))
            for resource, limit in limits:
                used = sum((demand(s, resource) for s in specs[(team_id, cluster_id)]), Decimal(0))
                rows.append(
                    PoolUsage(pool=pool.name, resource=resource, quota=limit, in_use=used, requested=Decimal(0))
                )
        out[(team_id, cluster_id)] = rows
    return out


def quotas_by_team_pool(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Quota]:
    """(team id, pool id) -> its quota, in one query."""
    pairs = set(pairs)
    if not pairs:
        return {}
    rows = Quota.objects.filter(team_id__in={t for t, _ in pairs}, pool_id__in={p for _, p in pairs})
    return {(q.team_id, q.pool_id): q for q in rows}
