"""Rollout pages: start a canary rollout from the app page, and follow one (its steps and weights, both versions'
error rate and latency per step on one chart, the gate's verdict at each step), pause, resume, promote or abort."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core.errors import Conflict, error_text
from apps.rollouts import services
from apps.rollouts.models import Rollout
from apps.teams.models import Role
from apps.teams.principal import principal_of

from .common import visible_app_or_404

ACTIONS = {
    "pause": services.rollout_pause,
    "resume": services.rollout_resume,
    "promote": services.rollout_promote,
    "abort": services.rollout_abort,
}


def _visible(request: HttpRequest, pk: int) -> Rollout:
    rollouts = principal_of(request).restrict(
        Rollout.objects.select_related("application__team", "application__cluster", "from_revision", "to_revision"),
        "application__team",
    )
    return get_object_or_404(rollouts, pk=pk)


def chart_data(r: Rollout) -> dict[str, Any]:
    """Per judged step: the weight, each version's 5xx share (percent, left axis) and p95 (ms, right axis)."""

    def at(v: dict) -> int:
        return int(datetime.fromisoformat(v.get("judged_at") or v["started_at"]).timestamp() * 1000)

    judged = [v for v in r.verdicts if v.get("stable") or v.get("canary")]

    def line(label: str, pick: Any, axis: str = "y", dash: bool = False) -> dict:
        return {"label": label, "axis": axis, "dash": dash, "data": [{"x": at(v), "y": pick(v)} for v in judged]}

    datasets = [
        line("weight of the new version (%)", lambda v: v["weight"]),
        line("running version 5xx (%)", lambda v: round(100 * v["stable"]["error_rate"], 2)),
        line("new version 5xx (%)", lambda v: round(100 * v["canary"]["error_rate"], 2)),
        line("running version p95 (ms)", lambda v: v["stable"]["p95_ms"], "y2", True),
        line("new version p95 (ms)", lambda v: v["canary"]["p95_ms"], "y2", True),
    ]
    xs = [p["x"] for d in datasets for p in d["data"]]
    return {
        "datasets": datasets,
        "unit": "%",
        "y2unit": "ms",
        "ymax": 100,
        "min": min(xs, default=0) - 5000,
        "max": max(xs, default=0) + 5000,
        "points": len(judged),
    }


def _context(request: HttpRequest, r: Rollout) -> dict[str, Any]:
    can_act = principal_of(request).can(r.application.team, Role.MEMBER)
    steps = []
    by_step = {v["step"]: v for v in r.verdicts}
    for i, weight in enumerate(r.steps):
        v = by_step.get(i, {})
        steps.append({"n": i + 1, "weight": weight, "verdict": v, "current": i == r.step_index and r.active})
    return {
        "r": r,
        "app": r.application,
        "steps": steps,
        "stable_weight": 100 - r.weight,
        "chart": chart_data(r),
        "chart_id": f"rollout-{r.pk}-chart",
        "data_id": f"rollout-{r.pk}-chart-data",
        "can_act": can_act,
        "can_pause": can_act and r.state == Rollout.State.RUNNING and r.phase in ("start", "split"),
        "can_resume": can_act and r.state == Rollout.State.PAUSED,
        "can_promote": can_act and r.state in Rollout.ACTIVE and r.phase == "split",
        "can_abort": can_act and r.state in Rollout.ACTIVE and r.phase in ("start", "split"),
    }


@login_required
def rollout_detail(request: HttpRequest, pk: int) -> HttpResponse:
    r = _visible(request, pk)
    return render(request, "rollouts/detail.html", _context(request, r))


@login_required
def rollout_status(request: HttpRequest, pk: int) -> HttpResponse:
    r = _visible(request, pk)
    return render(request, "rollouts/_status.html", _context(request, r))


@login_required
@require_POST
def rollout_act(request: HttpRequest, pk: int, verb: str) -> HttpResponse:
    r = _visible(request, pk)
    if verb not in ACTIONS:
        raise Http404
    if not principal_of(request).can(r.application.team, Role.MEMBER):
        raise Http404
    try:
        ACTIONS[verb](actor=request.user, rollout=r, source="ui")
        messages.success(request, f"Rollout {verb}{'d' if verb.endswith('e') else 'ed'}.")
    except Conflict as exc:
        messages.error(request, str(exc.detail.get("detail", exc.detail)))
    return redirect("dashboard:rollout_detail", pk=r.pk)


@login_required
@require_POST
def rollout_new(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a rollout of the app to one of its revisions, from the app page's form."""
    app = visible_app_or_404(request, pk)
    if not principal_of(request).can(app.team, Role.MEMBER):
        raise Http404
    raw_steps = request.POST.get("steps", "").strip()
    try:
        steps = [float(s) for s in raw_steps.replace(" ", "").split(",") if s] if raw_steps else None
        seconds = int(request.POST["step_seconds"]) if request.POST.get("step_seconds") else None
        revision = int(request.POST.get("revision", ""))
    except ValueError:
        messages.error(
            request,
            "Rollout refused: steps are percentages separated by commas; seconds and the revision are whole numbers.",
        )
        return redirect("dashboard:app_detail", pk=app.pk)
    try:
        r = services.rollout_start(
            actor=request.user, application=app, revision=revision, steps=steps, step_seconds=seconds, source="ui"
        )
    except (ValidationError, Conflict) as exc:
        messages.error(request, "Rollout refused: " + error_text(exc))
        return redirect("dashboard:app_detail", pk=app.pk)
    messages.success(request, f"Rolling out r{r.to_revision.number}: the new version starts beside the running one.")
    return redirect("dashboard:rollout_detail", pk=r.pk)
