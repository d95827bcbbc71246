"""Conditions of clusters, shared by the teams with apps there: failed pushes, unreachable, drift, compaction."""

from __future__ import annotations

import math
from datetime import datetime

from django.db.models import OuterRef, Subquery

from apps.clusters.models import Cluster, SyncRun
from apps.compaction.models import CompactionPlan
from apps.quotas.services import fmt

from .base import Condition, Rules, _duration, _json


def push_failed(rules: Rules, now: datetime) -> list[Condition]:
    last = SyncRun.objects.filter(cluster=OuterRef("pk")).exclude(state=SyncRun.State.RUNNING).order_by("-id")
    clusters = Cluster.objects.annotate(
        last_state=Subquery(last.values("state")[:1]),
        last_error=Subquery(last.values("error")[:1]),
        last_error_kind=Subquery(last.values("error_kind")[:1]),
        last_faults=Subquery(last.values("faults")[:1]),
    ).filter(last_state=SyncRun.State.FAILED)
    out = []
    for c in clusters:
        rule = rules.for_subject("push_failed", cluster=c.pk)
        if rule is not None:
            out.append(
                Condition(
                    "push_failed",
                    f"push_failed:cluster:{c.pk}",
                    f"The last push of {c.name}'s Serve config failed",
                    rule,
                    cluster_id=c.pk,
                    evidence={
                        "error": (c.last_error or "")[:2000],
                        "error_kind": c.last_error_kind or "",
                        "faults": _json(c.last_faults),
                    },
                )
            )
    return out


def cluster_unreachable(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for c in Cluster.objects.filter(health=Cluster.Health.UNREACHABLE):
        rule = rules.for_subject("cluster_unreachable", cluster=c.pk)
        if rule is None:
            continue
        since = c.last_seen_at or c.created_at
        if (now - since).total_seconds() < rules.params(rule)["for_s"]:
            continue
        out.append(
            Condition(
                "cluster_unreachable",
                f"cluster_unreachable:cluster:{c.pk}",
                f"{c.name} has not answered since {since:%Y-%m-%d %H:%M} UTC",
                rule,
                cluster_id=c.pk,
                evidence={"health_message": c.health_message[:1000], "last_seen_at": since.isoformat()},
            )
        )
    return out


def drift(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for c in Cluster.objects.exclude(drift=[]).select_related("push_state"):
        rule = rules.for_subject("drift", cluster=c.pk)
        if rule is not None:
            apps = ", ".join(d.get("app", "") for d in c.drift[:5])
            out.append(
                Condition(
                    "drift",
                    f"drift:cluster:{c.pk}",
                    f"{c.name} runs something other than its stored configs ({apps})",
                    rule,
                    cluster_id=c.pk,
                    evidence={"drift": c.drift[:20], "policy": c.push_state.drift_policy},
                )
            )
    return out


def compaction_waiting(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    plans = CompactionPlan.objects.filter(state=CompactionPlan.State.PLANNED, gpus_freed__gt=0).select_related(
        "cluster"
    )
    for plan in plans:
        rule = rules.for_subject("compaction_waiting", cluster=plan.cluster_id)
        if rule is None:
            continue
        waited = (now - plan.created_at).total_seconds()
        if waited < rules.params(rule)["wait_s"] or not plan.nodes_to_drain:
            continue
        out.append(
            Condition(
                "compaction_waiting",
                f"compaction_waiting:plan:{plan.pk}",
                f"Compaction plan #{plan.pk} on {plan.cluster.name} would free {len(plan.nodes_to_drain)} node(s) "
                f"({fmt(plan.gpus_freed)} GPUs) and has waited {_duration(math.floor(waited))}",
                rule,
                cluster_id=plan.cluster_id,
                evidence={
                    "plan": plan.pk,
                    "nodes_to_drain": plan.nodes_to_drain,
                    "gpu_hours_per_day": str(plan.gpu_hours_per_day),
                },
            )
        )
    return out
