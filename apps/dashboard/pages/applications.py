"""Application pages: one app, its live status, revisions and their diff, the form, rollback and delete."""

from __future__ import annotations

import difflib
import json
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.applications import services as app_services
from apps.applications.models import Application
from apps.catalog.models import ModelEntry
from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_by_id
from apps.core.errors import Conflict, error_detail, error_fields
from apps.deploys.visibility import ClusterLens
from apps.metrics import gpus
from apps.metrics.sources import residency
from apps.quotas.services import fmt
from apps.servespec.spec import normalize_spec
from apps.teams.models import Role
from apps.teams.principal import principal_of

from ..forms import EXTRA_ROWS, AppForm, deployment_formset, rows_from_spec, spec_from_forms, split_errors
from .common import show_errors, visible_app_or_404

TEMPLATES = {
    "hello": ("examples.hello:app", [{"name": "Hello", "num_replicas": 1, "num_cpus": 0.1}]),
    "pipeline": (
        "examples.pipeline:app",
        [
            {"name": n, "num_replicas": 1, "num_cpus": 0.1}
            for n in ("Ingress", "Preprocess", "LengthModel", "SentimentModel")
        ],
    ),
    "multiplexed": ("examples.multiplexed:app", [{"name": "Mux", "num_replicas": 1, "num_cpus": 0.1}]),
}


BLANK_ROW = {
    "name": "",
    "num_replicas": "",
    "autoscale": False,
    "min_replicas": "",
    "max_replicas": "",
    "num_cpus": "",
    "num_gpus": "",
    "max_ongoing_requests": "",
    "user_config": "",
    "extra": "",
}


@login_required
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    app = visible_app_or_404(request, pk)
    revisions = list(app.revisions.select_related("author").order_by("-number")[:50])
    rollouts = list(app.rollouts.select_related("from_revision", "to_revision").order_by("-created_at", "-id")[:10])
    runs = list(app.cluster.sync_runs.defer("config_snapshot").order_by("-created_at", "-id")[:10])
    show_errors(ClusterLens(principal_of(request), [app.cluster_id]), runs)

    where: dict[str, list[dict]] = {}
    for r in residency(app.cluster, app.serve_name):
        where.setdefault(r.get("model_id", ""), []).append(r)
    models = [
        {"model_id": m.model_id, "deployment": m.deployment, "uri": m.uri, "resident": where.get(m.model_id, [])}
        for m in ModelEntry.objects.filter(application=app)
    ]
    return render(
        request,
        "dashboard/app_detail.html",
        {
            "app": app,
            "spec_json": json.dumps(app.current_revision.spec if app.current_revision else {}, indent=2),
            "revisions": revisions,
            "runs": runs,
            "can_edit": principal_of(request).can(app.team, Role.MEMBER),
            "polling": not app.settled,
            "app_id": str(app.pk),
            "is_multiplexed": bool(models)
            or "multiplex" in (app.current_revision.spec.get("import_path", "") if app.current_revision else ""),
            "models": models,
            "rollouts": rollouts,
            "active_rollout": next((r for r in rollouts if r.active), None),
            "rollout_targets": [r for r in revisions if r.pk != app.current_revision_id],
            "gpu_view": gpus.for_display(gpus.view_for(principal_of(request), app.cluster), only_app=app.pk),
        },
    )


@login_required
def app_status_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    app = visible_app_or_404(request, pk)
    # Once the app has settled, "pushing to ..." no longer says what is happening: the fragment clears the flash.
    return render(request, "dashboard/_app_status.html", {"app": app, "polling": not app.settled, "fragment": True})


@login_required
def app_diff(request: HttpRequest, pk: int) -> HttpResponse:
    app = visible_app_or_404(request, pk)
    revs = {r.number: r for r in app.revisions.all()}
    try:
        a = int(request.GET.get("from", "0"))
        b = int(request.GET.get("to", "0"))
    except ValueError as exc:
        raise Http404 from exc
    if a not in revs or b not in revs:
        raise Http404("No such revision")
    left = json.dumps(revs[a].spec, indent=2, sort_keys=True).splitlines()
    right = json.dumps(revs[b].spec, indent=2, sort_keys=True).splitlines()
    diff = list(difflib.unified_diff(left, right, f"r{a}", f"r{b}", lineterm="", n=3))
    return render(request, "dashboard/_diff.html", {"app": app, "a": a, "b": b, "diff": diff})


def _form_context(request: HttpRequest, app: Application | None, rows: list[dict], values: dict, errors: dict) -> dict:
    fields, row_errors, other = split_errors(errors)
    rows = [dict(r, errors=row_errors.get(i, {})) for i, r in enumerate(rows)]
    teams = list(principal_of(request).teams(Role.MEMBER).order_by("slug"))
    return {
        "app": app,
        "rows": rows,
        "values": values,
        "errors": fields,
        "other_errors": other,
        "teams": teams,
        "clusters": Cluster.objects.order_by("name"),
    }


@login_required
def app_form(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    app = visible_app_or_404(request, pk) if pk else None
    if app is not None and not principal_of(request).can(app.team, Role.MEMBER):
        raise PermissionDenied(f"You need the member role in {app.team.slug} to edit its applications.")
    if request.method != "POST":
        spec = app.current_revision.spec if app and app.current_revision else {}
        values = {
            "team": app.team.slug if app else request.GET.get("team", ""),
            "cluster": str(app.cluster_id) if app else request.GET.get("cluster", ""),
            "name": app.name if app else "",
            "route_prefix": spec.get("route_prefix", ""),
            "import_path": spec.get("import_path", "examples.hello:app" if not app else ""),
            "args": json.dumps(spec["args"], indent=1) if spec.get("args") else "",
            "runtime_env": json.dumps(spec["runtime_env"], indent=1) if spec.get("runtime_env") else "",
            "logging_config": json.dumps(spec["logging_config"], indent=1) if spec.get("logging_config") else "",
            "autoscaling_policy": json.dumps(spec["autoscaling_policy"], indent=1)
            if spec.get("autoscaling_policy")
            else "",
            "external_scaler_enabled": bool(spec.get("external_scaler_enabled")),
            "version": app.version if app else "",
        }
        template = TEMPLATES.get(request.GET.get("template", "hello"), TEMPLATES["hello"])
        if not app:
            values["import_path"] = template[0]
            if values["team"]:
                values["route_prefix"] = f"/{values['team']}/my-app"
        rows = rows_from_spec(spec) or [dict(BLANK_ROW, **row) for row in template[1]]
        rows += [dict(BLANK_ROW) for _ in range(EXTRA_ROWS)]
        return render(request, "dashboard/app_form.html", _form_context(request, app, rows, values, {}))

    form = AppForm(request.POST)
    form.is_valid()
    formset = deployment_formset(request.POST)
    formset.is_valid()
    values = {f: form[f].value() or "" for f in form.fields}
    values["external_scaler_enabled"] = bool(form["external_scaler_enabled"].value())
    spec, errors = spec_from_forms(form, formset)
    rows = [row.row() for row in formset.forms if not row.is_blank()]
    rows += [dict(BLANK_ROW) for _ in range(EXTRA_ROWS)]
    refusal = None
    if errors:  # show every problem at once, not only the ones the form itself found
        try:
            normalize_spec(spec)
        except ValidationError as exc:
            errors = {**error_fields(exc), **errors}
    if not errors:
        try:
            if app is None:
                team = principal_of(request).teams().filter(slug=values["team"]).first()
                cluster = cluster_by_id(values["cluster"])
                if team is None or not principal_of(request).can(team, Role.MEMBER):
                    raise ValidationError({"team": ["Choose a team in which you may deploy."]})
                if cluster is None:
                    raise ValidationError({"cluster": ["Choose a cluster."]})
                app = app_services.application_create(
                    actor=request.user, team=team, cluster=cluster, name=values["name"], spec=spec, source="ui"
                )
                messages.success(request, f"Application {app.name} created; pushing to {cluster.name}.")
            else:
                version = int(values["version"]) if values["version"].isdigit() else None
                app = app_services.application_update(
                    actor=request.user, application=app, spec=spec, expected_version=version, source="ui"
                )
                messages.success(request, f"Saved revision {app.current_revision.number} of {app.name}.")
            return redirect("dashboard:app_detail", pk=app.pk)
        except ValidationError as exc:
            errors = error_fields(exc)
            refusal = quota_refusal(error_detail(exc), values.get("team") or (app.team.slug if app else ""))
            if refusal:
                errors.pop("quota", None)  # said below, in the user's terms
                for row in rows:  # the fields that ask for what is over the quota
                    if row.get("num_gpus") not in ("", None, "0"):
                        row.setdefault("quota_error", True)
        except Conflict as exc:
            errors = error_fields(exc)
    context = _form_context(request, app, rows, values, errors)
    context["quota_refusal"] = refusal
    return render(request, "dashboard/app_form.html", context, status=400)


def quota_refusal(detail: Any, team_slug: str) -> dict[str, Any] | None:
    """A quota refusal as the person who asked reads it: per pool, what this application asks for, what the team's
    quota is, what its other apps already use, what is left; and where to ask for more."""
    pools = detail.get("quota_detail") if isinstance(detail, dict) else None
    if not pools:
        return None
    lines = []
    for p in pools:
        quota = Decimal(p["quota"]) if p.get("quota") is not None else None
        left = max(quota - Decimal(p["in_use"]), Decimal(0)) if quota is not None else Decimal(0)
        lines.append(
            {
                **p,
                "left": fmt(left),
                "sentence": f"This application asks for {p['requested']} {p['resource']} in {p['pool']}; "
                + (
                    f"the team's quota there is {p['quota']}, its other applications use {p['in_use']}, "
                    f"so {fmt(left)} is left."
                    if quota is not None
                    else "the team has no quota there."
                ),
            }
        )
    return {"pools": lines, "team": team_slug}


@login_required
@require_POST
def app_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    app = visible_app_or_404(request, pk)
    if not principal_of(request).can(app.team, Role.MEMBER):
        raise Http404
    try:
        number = int(request.POST.get("revision", ""))
        app = app_services.application_rollback(
            actor=request.user, application=app, revision_number=number, source="ui"
        )
        messages.success(request, f"Rolled back: revision {app.current_revision.number} copies r{number}.")
    except (ValueError, ValidationError, Conflict) as exc:
        detail = getattr(exc, "detail", None) or {"revision": ["Choose a revision."]}
        messages.error(
            request, "Rollback refused: " + "; ".join(str(m) for v in detail.values() if isinstance(v, list) for m in v)
        )
    return redirect("dashboard:app_detail", pk=app.pk)


@login_required
@require_POST
def app_delete(request: HttpRequest, pk: int) -> HttpResponse:
    app = visible_app_or_404(request, pk)
    if not principal_of(request).can(app.team, Role.MEMBER):
        raise Http404
    if request.POST.get("confirm") != app.name:
        messages.error(request, f"Type the application's name ({app.name}) to confirm deletion.")
        return redirect("dashboard:app_detail", pk=app.pk)
    app_services.application_delete(actor=request.user, application=app, source="ui")
    messages.success(request, f"{app.name} will be removed from {app.cluster.name} with the next push.")
    return redirect("dashboard:team_detail", slug=app.team.slug)
