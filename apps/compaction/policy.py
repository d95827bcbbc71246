"""The cluster's compaction policy, run by beat: suggest a plan, or execute one inside the cluster's window."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.rollouts.selectors import under_way

from .inputs import observe_for_plan, serve_in_motion
from .models import CompactionPlan
from .planner import plan as run_planner
from .services import plan_execute, save_plan


def in_window(window: str, now: Any = None) -> bool:
    if not window:
        return True
    now = now or timezone.now()
    try:
        start, end = (int(part.split(":")[0]) * 60 + int(part.split(":")[1]) for part in window.split("-"))
    except (ValueError, IndexError):
        return False
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start <= end else minute >= start or minute < end


def policy_tick(cluster_id: int) -> str:
    """Beat: suggest or run a compaction per the cluster's policy, never during a deploy, a rollout, another
    compaction or Serve's own replica moves. Observes the cluster first (only when nothing else rules a plan out)."""
    cluster = Cluster.objects.select_related("compaction_settings", "push_state").get(pk=cluster_id)
    policy = cluster.compaction_settings
    if policy.compaction_policy == "off":
        return "off"
    busy = (
        cluster.desired_generation != cluster.push_state.pushed_generation
        or Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(state__in=[s.value for s in Application.SETTLED])
        .exists()
    )
    if busy:
        return "deploy in progress"
    if under_way(cluster.pk).exists():
        # A rollout's new version runs beside the old one only until it ends: a plan now would count replicas that
        # are about to go, and a drain would move replicas whose metrics judge the step.
        return "rollout in progress"
    if CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.EXECUTING).exists():
        return "compaction running"
    try:
        obs, state = observe_for_plan(cluster)
    except ValidationError:
        return "unreachable"
    if serve_in_motion(obs.apps):
        return "Serve is moving replicas"
    if len(run_planner(state)["nodes_to_drain"]) < max(1, policy.compaction_threshold):
        return "nothing to free"
    latest = CompactionPlan.objects.filter(cluster=cluster, state=CompactionPlan.State.PLANNED).first()
    if policy.compaction_policy == "suggest":
        if latest and latest.input == state:
            return "suggested already"
        save_plan(
            actor="system (policy)", cluster=cluster, state=state, observed_at=obs.at, trigger="suggest", source="task"
        )
        return "suggested"
    if not in_window(policy.compaction_window):
        return "outside window"
    plan = save_plan(
        actor="system (policy)", cluster=cluster, state=state, observed_at=obs.at, trigger="automatic", source="task"
    )
    plan_execute(actor="system (policy)", plan=plan, source="task")
    return "executing"
