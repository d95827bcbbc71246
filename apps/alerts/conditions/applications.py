"""Conditions of applications: failed, and crash-looping."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from apps.applications.models import Application
from apps.rollouts.models import Rollout

from ..kinds import effective_params
from .base import Condition, Rules, _app_rule, _live_apps


def app_failed(rules: Rules, now: datetime) -> list[Condition]:
    """A failed or unhealthy app. It resolves only when the app itself recovers: while Ray retries the same
    revision (another team's push makes Ray deploy every failed app again), the incident stays open."""
    from ..models import Incident

    failed_revision = {
        app_id: evidence.get("revision")
        for app_id, evidence in Incident.objects.filter(kind="app_failed", state=Incident.State.OPEN).values_list(
            "application_id", "evidence"
        )
    }
    out = []
    states = [Application.State.DEPLOY_FAILED, Application.State.UNHEALTHY, Application.State.DEPLOYING]
    for app in _live_apps().filter(state__in=states):
        if app.state == Application.State.DEPLOYING and (
            app.pk not in failed_revision or failed_revision[app.pk] != app.deployed_revision_id
        ):
            continue  # a new revision of its own is rolling out: its outcome decides
        rule = _app_rule(rules, "app_failed", app)
        if rule is None:
            continue
        deployments = {
            name: {"status": d.get("status"), "message": (d.get("message") or "")[:500]}
            for name, d in (app.status.get("deployments") or {}).items()
        }
        label = (
            "DEPLOY_FAILED (Ray is deploying the same revision again)"
            if app.state == Application.State.DEPLOYING
            else app.get_state_display().upper().replace(" ", "_")
        )
        out.append(
            Condition(
                "app_failed",
                f"app_failed:app:{app.pk}",
                f"{app.team.slug}/{app.name} is {label} on {app.cluster.name}",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {
                    "state": app.state,
                    "revision": app.deployed_revision_id,
                    "ray_status": app.status.get("status"),
                    "message": (app.status_message or "")[-1500:],
                    "deployments": deployments,
                },
            )
        )
    return out


def crash_loop(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for app in _live_apps().exclude(replica_starts=[]):
        rule = _app_rule(rules, "crash_loop", app)
        if rule is None:
            continue
        p = rules.params(rule)
        since = now.timestamp() - p["window_s"]
        recent = [s for s in app.replica_starts if s.get("t", 0) >= since]
        if len(recent) < p["starts"]:
            continue
        per_dep: dict[str, int] = defaultdict(int)
        for s in recent:
            per_dep[s.get("deployment", "")] += 1
        worst = max(per_dep, key=per_dep.get)
        out.append(
            Condition(
                "crash_loop",
                f"crash_loop:app:{app.pk}",
                f"{app.team.slug}/{app.name}: Ray started {len(recent)} replicas of {worst} in "
                f"{p['window_s'] / 60:g} min without a config change (crash loop)",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {"starts": recent[-20:], "per_deployment": dict(per_dep), "window_s": p["window_s"]},
            )
        )
    return out


def rollout_rolled_back(rules: Rules, now: datetime) -> list[Condition]:
    """A rollout the engine rolled back (a gate failed, the new version failed to deploy, the deadline passed), for
    ``window_s`` after the rollback: the team hears it once, with the gate's figures. One the team aborted is not."""
    from datetime import timedelta

    longest = max(
        [
            effective_params("rollout_rolled_back", r.params)["window_s"]
            for r in rules.by_scope.values()
            if r.kind == "rollout_rolled_back"
        ]
        or [3600]
    )
    out = []
    rollouts = Rollout.objects.filter(
        state=Rollout.State.ROLLED_BACK, decided_at__gte=now - timedelta(seconds=longest)
    ).select_related("application__team", "application__cluster", "from_revision", "to_revision")
    for r in rollouts:
        app = r.application
        rule = _app_rule(rules, "rollout_rolled_back", app)
        if rule is None or (now - r.decided_at).total_seconds() > rules.params(rule)["window_s"]:
            continue
        last = r.verdicts[-1] if r.verdicts else {}
        out.append(
            Condition(
                "rollout_rolled_back",
                f"rollout_rolled_back:rollout:{r.pk}",
                f"{app.team.slug}/{app.name}: the rollout of r{r.to_revision.number} rolled back to "
                f"r{r.from_revision.number} on {app.cluster.name}: {r.reason}",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {
                    "rollout": r.pk,
                    "from_revision": r.from_revision.number,
                    "to_revision": r.to_revision.number,
                    "reason": r.reason,
                    "step": last.get("step"),
                    "weight": last.get("weight"),
                    "stable": last.get("stable"),
                    "canary": last.get("canary"),
                },
            )
        )
    return out
