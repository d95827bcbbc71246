"""Conditions of teams' quotas: allocation near the quota, writes refused by admission."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.quotas.models import AdmissionRefusal, Quota
from apps.quotas.selectors import usage_for
from apps.quotas.services import fmt

from ..kinds import effective_params
from .base import Condition, Rules


def quota_high(rules: Rules, now: datetime) -> list[Condition]:
    """Allocation above a share of a quota. Not of a starter grant: a newcomer's first app is meant to use it all."""
    pairs = set(Application.objects.filter(deleted_at__isnull=True).values_list("team_id", "cluster_id").distinct())
    names = dict(Cluster.objects.filter(pk__in={c for _, c in pairs}).values_list("pk", "name"))
    starter = set(Quota.objects.filter(starter=True).values_list("team_id", "cluster_id", "pool__name"))
    out = []
    for (team_id, cluster_id), rows in usage_for(pairs).items():
        rule = rules.for_subject("quota_high", team=team_id, cluster=cluster_id)
        if rule is None:
            continue
        share = Decimal(str(rules.params(rule)["percent"])) / 100
        for u in rows:
            if u.quota is None or u.quota <= 0 or u.in_use <= share * u.quota:
                continue
            if (team_id, cluster_id, u.pool) in starter:
                continue
            pct = float(u.in_use / u.quota * 100)
            out.append(
                Condition(
                    "quota_high",
                    f"quota_high:team:{team_id}:cluster:{cluster_id}:{u.pool}:{u.resource}",
                    f"{pct:.0f}% of the {u.resource} quota in {u.pool} on {names.get(cluster_id)} is allocated "
                    f"({fmt(u.in_use)} of {fmt(u.quota)})",
                    rule,
                    team_id,
                    None,
                    cluster_id,
                    {"pool": u.pool, "resource": u.resource, "in_use": fmt(u.in_use), "quota": fmt(u.quota)},
                )
            )
    return out


def admission_refused(rules: Rules, now: datetime) -> list[Condition]:
    longest = max(
        [
            effective_params("admission_refused", r.params)["window_s"]
            for r in rules.by_scope.values()
            if r.kind == "admission_refused"
        ]
        or [3600]
    )
    latest: dict[tuple[int, int], list[AdmissionRefusal]] = defaultdict(list)
    for r in AdmissionRefusal.objects.filter(at__gte=now - timedelta(seconds=longest)).select_related("cluster"):
        latest[(r.team_id, r.cluster_id)].append(r)
    out = []
    for (team_id, cluster_id), refusals in latest.items():
        rule = rules.for_subject("admission_refused", team=team_id, cluster=cluster_id)
        if rule is None:
            continue
        window = rules.params(rule)["window_s"]
        recent = [r for r in refusals if (now - r.at).total_seconds() <= window]
        if not recent:
            continue
        out.append(
            Condition(
                "admission_refused",
                f"admission_refused:team:{team_id}:cluster:{cluster_id}",
                f"{len(recent)} write(s) refused by quota admission on {recent[0].cluster.name}: "
                f"{(recent[0].reasons or ['over quota'])[0]}"[:300],
                rule,
                team_id,
                None,
                cluster_id,
                {
                    "refusals": [
                        {"at": r.at.isoformat(), "by": r.actor_label, "reasons": r.reasons} for r in recent[:10]
                    ]
                },
            )
        )
    return out
