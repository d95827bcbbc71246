"""Every write to rollouts, and the engine that moves them along (``tick``, called by beat with what Ray reports).

A rollout's phases are described in ``placement``. Its state says who decides next: ``running`` (the engine steps
it while the gates pass), ``paused`` (the team holds the weight), and the outcomes ``succeeded``, ``rolled_back``
(a gate failed, the new version failed to deploy, or the 120 minutes passed) and ``aborted`` (the team stopped it).
An outcome is decided at once; the phases that put one version back at the route follow on their own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.applications.models import Application
from apps.applications.services import check_external_scaler, locked_for_write, new_revision
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.services import request_sync
from apps.core.errors import Conflict, Invalid
from apps.core.jobs import enqueue
from apps.quotas.services import check_admission, fmt, refusals_recorded, team_pool_usage
from apps.servespec.ray_schema import same_app
from apps.servespec.spec import check_runtime_env_policy, effective_route, normalize_spec, spec_hash

from . import gates as gate_checks
from .models import DEADLINE_MINUTES, DEFAULT_GATES, DEFAULT_STEP_SECONDS, DEFAULT_STEPS, Rollout
from .placement import side_names

Phase, State = Rollout.Phase, Rollout.State
GATE_BOUNDS = {
    "max_error_rate_increase": (0.0, 1.0),
    "max_p95_ratio": (1.0, 100.0),
    "p95_slack_ms": (0.0, 60_000.0),
    "min_requests": (1, 1_000_000),
}
MAX_STEPS = 20


def clean_steps(value: Any) -> list[float]:
    if value in (None, ""):
        return list(DEFAULT_STEPS)
    if not isinstance(value, list) or not value or len(value) > MAX_STEPS:
        raise ValidationError({"steps": [f"A list of 1 to {MAX_STEPS} percentages, e.g. {DEFAULT_STEPS}."]})
    out: list[float] = []
    for i, w in enumerate(value):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w <= 100:
            raise ValidationError({f"steps.{i}": ["Must be a number above 0 and at most 100 (percent)."]})
        if out and w <= out[-1]:
            raise ValidationError({f"steps.{i}": ["Steps must rise: each above the one before."]})
        out.append(float(w))
    if out[-1] != 100:
        raise ValidationError({"steps": ["The last step must be 100: the new version takes all traffic."]})
    return out


def clean_step_seconds(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_STEP_SECONDS
    if isinstance(value, bool) or not isinstance(value, int) or not 10 <= value <= 86_400:
        raise ValidationError({"step_seconds": ["Must be a whole number of seconds from 10 to 86400."]})
    return value


def clean_gates(value: Any) -> dict[str, float]:
    if value in (None, ""):
        value = {}
    if not isinstance(value, dict):
        raise ValidationError({"gates": [f"An object with any of: {', '.join(DEFAULT_GATES)}."]})
    out = dict(DEFAULT_GATES)
    for key, v in value.items():
        if key not in GATE_BOUNDS:
            raise ValidationError({f"gates.{key}": [f"Not a gate; the gates are: {', '.join(DEFAULT_GATES)}."]})
        low, high = GATE_BOUNDS[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
            raise ValidationError({f"gates.{key}": [f"Must be a number from {low:g} to {high:g}."]})
        out[key] = v
    return out


def _summary(r: Rollout) -> dict[str, Any]:
    return {
        "rollout": r.pk,
        "from_revision": r.from_revision.number,
        "to_revision": r.to_revision.number,
        "state": r.state,
        "phase": r.phase,
        "weight": r.weight,
        "reason": r.reason,
    }


def rollout_start(
    *,
    actor: Any,
    application: Application,
    spec: dict | None = None,
    revision: int | None = None,
    steps: Any = None,
    step_seconds: Any = None,
    gates: Any = None,
    source: str = "api",
) -> Rollout:
    """Start a rollout of ``application`` from the revision it runs to a new one: ``spec`` (a new revision is made,
    not yet current) or the number of an existing ``revision``. Admission counts the surge: the team's quota must
    hold the new version beside the running one, and beside itself while it is promoted."""
    steps, step_seconds, gates = clean_steps(steps), clean_step_seconds(step_seconds), clean_gates(gates)
    if (spec is None) == (revision is None):
        raise ValidationError({"spec": ["Give the new version: a spec, or the number of a revision."]})
    team, cluster = application.team, application.cluster
    with refusals_recorded(team=team, cluster=cluster, actor=actor), transaction.atomic():
        cluster, app = locked_for_write(application)
        if app.rollouts.exclude(phase=Phase.DONE).exists():
            raise Conflict({"detail": "A rollout of this application is under way: promote or abort it first."})
        current = app.current_revision
        if current is None or app.deployed_revision_id != current.pk or app.state != Application.State.RUNNING:
            raise ValidationError(
                {"application": ["A rollout starts from a running version: wait until the app is RUNNING."]}
            )
        if app.fault_revision_id:
            raise ValidationError({"application": [f"The app has a held-back revision ({app.fault[:200]})."]})
        if not app.route_prefix:
            raise ValidationError(
                {"route_prefix": ["A rollout splits HTTP traffic at the app's route; this app has none."]}
            )
        if spec is not None:
            clean = normalize_spec(spec)
            target = None
        else:
            target = app.revisions.filter(number=revision).first()
            if target is None:
                raise ValidationError({"revision": [f"Revision {revision} does not exist for this application."]})
            clean = copy.deepcopy(target.spec)
        if (effective_route(clean) or "") != app.route_prefix:
            raise ValidationError(
                {"route_prefix": [f"A rollout keeps the app's route ({app.route_prefix}); change it separately."]}
            )
        if spec_hash(clean) == current.spec_hash or same_app(current.spec, clean):
            raise ValidationError({"spec": ["The new version is the one running: nothing to roll out."]})
        check_runtime_env_policy(cluster.runtime_env_policy, cluster.name, clean)
        check_external_scaler(cluster, clean)
        _admit_surge(app, cluster, clean)
        if target is None:
            target = new_revision(app, clean, actor, "rollout", current=False)
        now = timezone.now()
        try:
            rollout = Rollout.objects.create(
                application=app,
                from_revision=current,
                to_revision=target,
                steps=steps,
                step_seconds=step_seconds,
                gates=gates,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                created_at=now,
                phase_changed_at=now,
                deadline_at=now + timedelta(minutes=DEADLINE_MINUTES),
            )
        except IntegrityError as exc:
            raise Conflict({"detail": "A rollout of this application was just started; reload."}) from exc
        audit_record(
            actor=actor,
            team=app.team,
            action="rollout.start",
            obj=app,
            after={**_summary(rollout), "steps": steps, "step_seconds": step_seconds, "gates": gates},
            source=source,
        )
        request_sync(cluster_id=cluster.pk)
        transaction.on_commit(lambda: enqueue("workers.tasks.rollouts.follow", cluster.pk))
    return rollout


def _admit_surge(app: Application, cluster: Cluster, spec: dict) -> None:
    """The new version beside everything the team runs (this app's running version included), and, for its
    promotion, beside itself in place of the running version."""
    check_admission(team=app.team, cluster=cluster, spec=spec)
    usage = team_pool_usage(team=app.team, cluster=cluster, spec=spec, exclude_app_id=app.pk)
    refused = [u for u in usage if u.quota is not None and u.in_use + 2 * u.requested > u.quota and u.requested]
    refused += [u for u in usage if u.quota is None and u.requested > Decimal(0)]
    if refused:
        raise Invalid(
            {
                "quota": [
                    f"while it is promoted the new version runs twice ({fmt(u.requested)} {u.resource} each) beside "
                    f"{fmt(u.in_use)} in use: {fmt(u.in_use + 2 * u.requested)} of the quota of "
                    f"{fmt(u.quota)} in {u.pool} on {cluster.name}"
                    for u in refused
                ]
            }
        )


def _locked(rollout: Rollout) -> Rollout:
    return (
        Rollout.objects.select_for_update(of=("self",))
        .select_related("application__team", "application__cluster", "from_revision", "to_revision")
        .get(pk=rollout.pk)
    )


def _save(r: Rollout, *fields: str) -> None:
    r.save(update_fields=list(fields))


def _set_phase(r: Rollout, phase: str, now: datetime) -> None:
    r.phase, r.phase_changed_at = phase, now


def _steer(
    *,
    actor: Any,
    rollout: Rollout,
    source: str,
    action: str,
    refusal: Callable[[Rollout], str],
    change: Callable[[Rollout, datetime], None],
    push: bool,
) -> Rollout:
    """One of the team's commands: refused (409, saying why) unless the rollout is where the command applies;
    applied, audited, and pushed at once when it changes what runs."""
    with transaction.atomic():
        r = _locked(rollout)
        why = refusal(r)
        if why:
            raise Conflict({"detail": why})
        change(r, timezone.now())
        audit_record(
            actor=actor,
            team=r.application.team,
            action=f"rollout.{action}",
            obj=r.application,
            after=_summary(r),
            source=source,
        )
    if push:
        request_sync(cluster_id=r.application.cluster_id, trigger="rollout")
    return r


def _before_promotion(verb: str) -> Callable[[Rollout], str]:
    def refusal(r: Rollout) -> str:
        if r.state not in Rollout.ACTIVE or r.phase not in (Phase.START, Phase.SPLIT):
            return f"The rollout cannot be {verb} now (it is {r.state}, {r.phase})."
        return ""

    return refusal


def _pause(r: Rollout, now: datetime) -> None:
    r.state = State.PAUSED
    _save(r, "state")


def _resume(r: Rollout, now: datetime) -> None:
    r.state = State.RUNNING
    if r.phase == Phase.SPLIT:
        r.step_started_at = now  # the step is judged afresh
    _save(r, "state", "step_started_at")


def rollout_pause(*, actor: Any, rollout: Rollout, source: str = "api") -> Rollout:
    """Hold the weight where it is; the deadline still runs."""

    def refusal(r: Rollout) -> str:
        return (
            ""
            if r.state == State.RUNNING and r.phase in (Phase.START, Phase.SPLIT)
            else (f"Only a running rollout before its promotion pauses (it is {r.state}, {r.phase}).")
        )

    return _steer(
        actor=actor, rollout=rollout, source=source, action="pause", refusal=refusal, change=_pause, push=False
    )


def rollout_resume(*, actor: Any, rollout: Rollout, source: str = "api") -> Rollout:
    def refusal(r: Rollout) -> str:
        return "" if r.state == State.PAUSED else f"Only a paused rollout resumes (it is {r.state})."

    return _steer(
        actor=actor, rollout=rollout, source=source, action="resume", refusal=refusal, change=_resume, push=False
    )


def rollout_promote(*, actor: Any, rollout: Rollout, source: str = "api") -> Rollout:
    """All traffic to the new version at once, and the new version made the app's."""

    def refusal(r: Rollout) -> str:
        if r.phase == Phase.START and r.state in Rollout.ACTIVE:
            return "The new version is still starting: promote it once traffic is split."
        return _before_promotion("promoted")(r)

    return _steer(
        actor=actor,
        rollout=rollout,
        source=source,
        action="promote",
        refusal=refusal,
        change=lambda r, now: _promote(r, now, "promoted by hand"),
        push=True,
    )


def rollout_abort(*, actor: Any, rollout: Rollout, source: str = "api") -> Rollout:
    """All traffic back to the running version at once; the new version is removed."""
    who = getattr(actor, "username", None) or str(actor)
    return _steer(
        actor=actor,
        rollout=rollout,
        source=source,
        action="abort",
        refusal=_before_promotion("aborted"),
        change=lambda r, now: _roll_back(r, State.ABORTED, f"aborted by {who}", now),
        push=True,
    )


def _promote(r: Rollout, now: datetime, reason: str) -> None:
    app = r.application
    r.promoted, r.weight, r.reason = True, 100.0, reason
    r.state = State.RUNNING
    _set_phase(r, Phase.PROMOTE, now)
    _save(r, "promoted", "weight", "reason", "state", "phase", "phase_changed_at")
    Application.objects.filter(pk=app.pk).update(
        current_revision=r.to_revision, state=Application.State.PENDING, updated_at=now
    )


def _roll_back(r: Rollout, state: str, reason: str, now: datetime) -> None:
    """Everything to the running version in one push: the app takes its route back, the splitter steps aside with
    the new version beside it until requests already forwarded have finished (``restore``)."""
    r.state, r.reason, r.weight, r.decided_at = state, reason, 0.0, now
    _set_phase(r, Phase.RESTORE, now)
    _save(r, "state", "reason", "weight", "decided_at", "phase", "phase_changed_at")


def _ray_status(ray_apps: dict, name: str) -> tuple[str, str]:
    seen = ray_apps.get(name) or {}
    message = (seen.get("message") or "").strip().splitlines()
    return seen.get("status", ""), (message[-1] if message else "")[:300]


def tick(rollout: Rollout, ray_apps: dict, now: datetime | None = None) -> bool:
    """Move one rollout along from what Ray reports (``ray_apps``: Serve's applications by name) and the step's
    metrics. Returns whether the desired config changed (the caller pushes)."""
    now = now or timezone.now()
    with transaction.atomic():
        r = _locked(rollout)
        app = r.application
        if r.phase == Phase.DONE:
            return False
        canary_name, split_name = side_names(app.serve_name)
        if app.deleted_at is not None:
            r.state = State.ABORTED if r.state in Rollout.ACTIVE else r.state
            r.reason = r.reason or "the application was deleted"
            _set_phase(r, Phase.DONE, now)
            r.finished_at = now
            _save(r, "state", "reason", "phase", "phase_changed_at", "finished_at")
            return True
        canary, canary_message = _ray_status(ray_apps, canary_name)
        if r.state in Rollout.ACTIVE and r.phase in (Phase.START, Phase.SPLIT) and now >= r.deadline_at:
            _roll_back(r, State.ROLLED_BACK, f"not finished within {DEADLINE_MINUTES} minutes", now)
            _told(r)
            return True
        if (
            r.state in Rollout.ACTIVE
            and r.phase in (Phase.START, Phase.SPLIT)
            and canary
            in (
                "DEPLOY_FAILED",
                "UNHEALTHY",
            )
        ):
            _roll_back(r, State.ROLLED_BACK, f"the new version is {canary}: {canary_message}", now)
            _told(r)
            return True
        if r.phase == Phase.START:
            split, split_message = _ray_status(ray_apps, split_name)
            if r.state in Rollout.ACTIVE and split in ("DEPLOY_FAILED", "UNHEALTHY"):
                _roll_back(
                    r,
                    State.ROLLED_BACK,
                    f"the splitter is {split} ({split_message}): the cluster must be able to import "
                    "workers.on_cluster.splitter (see ROLLOUT_SPLITTER_RUNTIME_ENV)",
                    now,
                )
                _told(r)
                return True
            if r.state == State.RUNNING and canary == "RUNNING" and split == "RUNNING":
                _set_phase(r, Phase.SPLIT, now)
                _enter_step(r, 0, now)
                _save(r, "phase", "phase_changed_at", "step_index", "weight", "step_started_at", "verdicts")
                return True
            return False
        if r.phase == Phase.SPLIT:
            return r.state == State.RUNNING and _judge_step(r, now)
        if r.phase == Phase.PROMOTE:
            main = ray_apps.get(app.serve_name) or {}
            if main.get("status") == "RUNNING" and app.deployed_revision_id == r.to_revision_id and not app.config_diff:
                r.state, r.decided_at = State.SUCCEEDED, now
                _set_phase(r, Phase.RESTORE, now)
                _save(r, "state", "decided_at", "phase", "phase_changed_at")
                return True
            return False
        if r.phase == Phase.RESTORE:
            main = ray_apps.get(app.serve_name) or {}
            back = main.get("status") == "RUNNING" and main.get("route_prefix") in (app.route_prefix, None)
            if back and now - r.phase_changed_at >= timedelta(seconds=settings.ROLLOUT_GRACE_S):
                _set_phase(r, Phase.DONE, now)
                r.finished_at = now
                _save(r, "phase", "phase_changed_at", "finished_at")
                return True
        return False


def _enter_step(r: Rollout, index: int, now: datetime) -> None:
    r.step_index, r.weight, r.step_started_at = index, float(r.steps[index]), now
    r.verdicts = [*r.verdicts, {"step": index, "weight": r.weight, "started_at": now.isoformat(), "verdict": "waiting"}]


def _judge_step(r: Rollout, now: datetime) -> bool:
    """The step's verdict so far: a failure rolls back at once; a pass at the step's end advances."""
    app = r.application
    canary_name, _ = side_names(app.serve_name)
    window_s = max(1.0, (now - r.step_started_at).total_seconds())
    sides = gate_checks.read_sides(app.cluster, {"stable": app.serve_name, "canary": canary_name}, window_s, now)
    verdict = gate_checks.judge(sides, r.gates)
    entry = {**r.verdicts[-1], **verdict.json(), "judged_at": now.isoformat()}
    r.verdicts = [*r.verdicts[:-1], entry]
    if verdict.verdict == "fail":
        _roll_back(r, State.ROLLED_BACK, f"step {r.step_index + 1} ({r.weight:g}%): {verdict.reason}", now)
        _save(r, "verdicts")
        _told(r)
        return True
    if verdict.verdict == "pass" and window_s >= r.step_seconds:
        if r.step_index + 1 < len(r.steps):
            _enter_step(r, r.step_index + 1, now)
            _save(r, "step_index", "weight", "step_started_at", "verdicts")
        else:
            _save(r, "verdicts")
            _promote(r, now, f"every step passed its gates ({len(r.steps)} steps)")
        return True
    _save(r, "verdicts")
    return False


def _told(r: Rollout) -> None:
    """A rollback the team did not ask for is recorded; the alert rule ``rollout_rolled_back`` tells the team
    (incident, mail, webhook) on its next evaluation, which is asked for now."""
    audit_record(
        actor="system (rollout)",
        team=r.application.team,
        action="rollout.rolled_back",
        obj=r.application,
        after=_summary(r),
        source="task",
    )
    transaction.on_commit(lambda: enqueue("workers.tasks.alerts.evaluate_alerts"))
