"""Reads for quotas: usage of many (team, cluster) pairs in a fixed number of queries, quotas by pool."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from apps.clusters.models import GpuPool
from apps.teams.models import Team

from .models import Quota
from .services import PoolUsage, pool_usage

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
    quotas: dict[int, dict[int, Quota]] = defaultdict(dict)  # team id -> pool id -> quota
    for quota in Quota.objects.filter(team_id__in=team_ids, cluster_id__in=cluster_ids):
        quotas[quota.team_id][quota.pool_id] = quota
    specs: dict[Pair, list[dict]] = defaultdict(list)
    apps = Team.objects.filter(  # the teams' applications through the reverse relation: quotas sit below them
        pk__in=team_ids,
        applications__cluster_id__in=cluster_ids,
        applications__deleted_at__isnull=True,
        applications__current_revision__isnull=False,
    ).values_list("pk", "applications__cluster_id", "applications__current_revision__spec")
    for team_id, cluster_id, spec in apps:
        specs[(team_id, cluster_id)].append(spec)
    return {(t, c): pool_usage(pools[c], quotas[t], specs[(t, c)]) for t, c in pairs}


def quotas_by_team_pool(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], Quota]:
    """(team id, pool id) -> its quota, in one query."""
    pairs = set(pairs)
    if not pairs:
        return {}
    rows = Quota.objects.filter(team_id__in={t for t, _ in pairs}, pool_id__in={p for _, p in pairs})
    return {(q.team_id, q.pool_id): q for q in rows}
