"""Reads of rollouts for the layers above (compaction, alerts, tasks)."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Rollout


def under_way(cluster_id: int) -> QuerySet[Rollout]:
    """The cluster's rollouts that still place something on Ray (every phase but done)."""
    return Rollout.objects.filter(application__cluster_id=cluster_id).exclude(phase=Rollout.Phase.DONE)


def under_way_labels(cluster_id: int) -> list[str]:
    """'team/app' of each rollout under way on the cluster, for messages."""
    rows = under_way(cluster_id).values_list("application__team__slug", "application__name")
    return sorted(f"{team}/{name}" for team, name in rows)
