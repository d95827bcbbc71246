"""The dashboard: Django templates, htmx fragments for live status. Writes go through the services."""

from __future__ import annotations

import difflib
import json
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException, ValidationError

from apps.applications import serve_files
from apps.applications import services as app_services
from apps.applications.models import Application
from apps.applications.selectors import visible_application
from apps.applications.services import application_adopt
from apps.catalog.models import ModelEntry
from apps.clusters.models import Cluster, SyncRun
from apps.clusters.selectors import cluster_by_id, last_sync_runs, unmanaged_apps
from apps.clusters.services import unmanaged_remove
from apps.compaction.models import CompactionPlan
from apps.compaction.services import drained_node_ids, serve_in_motion
from apps.core.exceptions import Conflict
from apps.core.fields import error_fields, error_text
from apps.core.ids import parse_id
from apps.core.jobs import enqueue
from apps.deploys.selectors import cluster_state
from apps.metrics.selectors import residency
from apps.servespec.spec import normalize_spec
from apps.teams.models import Role, Team
from apps.teams.selectors import can, role_in, roles_in, teams_for

from .forms import EXTRA_ROWS, AppForm, deployment_formset, rows_from_spec, spec_from_forms, split_errors
from .selectors import showback

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


def _visible_app(request: HttpRequest, pk: int) -> Application:
    app = visible_application(request.user, pk)
    if app is None:
        raise Http404("No such application")
    return app


@login_required
def home(request: HttpRequest) -> HttpResponse:
    teams = list(teams_for(request.user).order_by("slug"))
    apps = Application.objects.filter(team__in=teams)
    roles = roles_in(request.user, teams)
    counts = {t.pk: 0 for t in teams}
    for team_id in apps.values_list("team_id", flat=True):
        counts[team_id] = counts.get(team_id, 0) + 1
    return render(
        request,
        "dashboard/home.html",
        {
            "teams": [(t, counts.get(t.pk, 0), roles[t.pk]) for t in teams],
            "clusters": Cluster.objects.order_by("name"),
        },
    )


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    clusters = list(Cluster.objects.order_by("name").prefetch_related("pools"))
    last = last_sync_runs(clusters)
    return render(request, "dashboard/cluster_list.html", {"rows": [(c, last.get(c.pk)) for c in clusters]})


@login_required
def cluster_detail(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    runs = Paginator(cluster.sync_runs.order_by("-created_at", "-id"), 20).get_page(request.GET.get("page"))
    state = cluster_state(cluster)
    visible = set(teams_for(request.user).values_list("slug", flat=True))

    plans = CompactionPlan.objects.filter(cluster=cluster).exclude(state=CompactionPlan.State.SUPERSEDED)[:5]
    stored = (
        {
            a.serve_name: a.status
            for a in Application.objects.filter(cluster=cluster, deleted_at__isnull=True).select_related("team")
            if a.status
        }
        if request.user.is_staff
        else {}
    )

    return render(
        request,
        "dashboard/cluster_detail.html",
        {
            "cluster": cluster,
            "unmanaged": unmanaged_apps(cluster) if request.user.is_staff else [],
            "all_teams": Team.objects.order_by("slug") if request.user.is_staff else [],
            "reconcile_interval": settings.RECONCILE_INTERVAL_S,
            "runs": runs,
            "state": state,
            "visible_teams": visible,
            "plans": plans,
            "drained": drained_node_ids(cluster),
            "serve_moving": [m for m in serve_in_motion(stored) if "PENDING_MIGRATION" in m],
            "executing": next((p for p in plans if p.state == CompactionPlan.State.EXECUTING), None),
            "cluster_id": str(cluster.pk),
            "team_colours": _colour_nodes(state),
        },
    )


@login_required
@require_POST
def cluster_sync(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    if not request.user.is_staff:
        raise Http404
    if enqueue("workers.tasks.sync.sync_cluster", cluster.pk, SyncRun.Trigger.MANUAL, True):
        messages.success(request, f"Push to {cluster.name} queued.")
    else:
        messages.error(request, "The task queue is unavailable; the reconcile pushes when it is back.")
    return redirect("dashboard:cluster_detail", pk=pk)


@login_required
@require_POST
def cluster_adopt(request: HttpRequest, pk: int) -> HttpResponse:

    if not request.user.is_staff:
        raise Http404
    cluster = get_object_or_404(Cluster, pk=pk)
    team = Team.objects.filter(slug=request.POST.get("team", "")).first()
    serve_name = request.POST.get("app", "")
    if team is None:
        messages.error(request, "Choose the team that adopts the app.")
        return redirect("dashboard:cluster_detail", pk=pk)
    try:
        app = application_adopt(
            actor=request.user,
            cluster=cluster,
            serve_name=serve_name,
            team=team,
            name=request.POST.get("name", "").strip() or None,
            source="ui",
        )
    except (ValidationError, APIException, Conflict) as exc:
        messages.error(request, f"{serve_name} was not adopted: {error_text(exc)}")
        return redirect("dashboard:cluster_detail", pk=pk)
    messages.success(request, f"{serve_name} is now {team.slug}/{app.name}; it keeps running unchanged.")
    return redirect("dashboard:app_detail", pk=app.pk)


@login_required
@require_POST
def cluster_unmanaged_remove(request: HttpRequest, pk: int) -> HttpResponse:

    if not request.user.is_staff:
        raise Http404
    cluster = get_object_or_404(Cluster, pk=pk)
    name = request.POST.get("app", "")
    if request.POST.get("confirm", "") != name:
        messages.error(request, f"Type the app's name ({name}) to confirm its removal.")
        return redirect("dashboard:cluster_detail", pk=pk)
    try:
        unmanaged_remove(actor=request.user, cluster=cluster, name=name, source="ui")
    except (APIException, Conflict) as exc:
        messages.error(request, f"{name} was not removed: {error_text(exc)}")
        return redirect("dashboard:cluster_detail", pk=pk)
    messages.success(request, f"{name} will be removed from {cluster.name} with the next push (queued now).")
    return redirect("dashboard:cluster_detail", pk=pk)


@login_required
def team_serve_config(request: HttpRequest, slug: str) -> HttpResponse:
    """Apply a Serve config file (upload or paste): the plan first, then apply; export the team's own."""

    team = _team_or_404(request, slug)
    clusters = list(Cluster.objects.order_by("name"))
    context: dict = {"team": team, "clusters": clusters, "can_deploy": can(request.user, team, Role.MEMBER)}
    cluster_id = parse_id(request.POST.get("cluster") or request.GET.get("cluster") or "")
    cluster = next((c for c in clusters if c.pk == cluster_id), clusters[0] if clusters else None)
    context["cluster"] = cluster
    if request.method != "POST":
        return render(request, "teams/serve_config.html", context)
    if not context["can_deploy"]:
        raise Http404
    upload = request.FILES.get("file")
    raw = upload.read(serve_files.MAX_FILE_BYTES + 1).decode("utf-8", "replace") if upload else None
    text = raw if raw is not None else request.POST.get("text", "")
    prune = request.POST.get("prune") == "on"
    context.update({"text": text, "prune": prune})
    if cluster is None or not text.strip():
        context["errors"] = {"file": ["Choose a cluster, and upload or paste a Serve config file."]}
        return render(request, "teams/serve_config.html", context, status=400)
    apply = request.POST.get("action") == "apply"
    try:
        document = serve_files.parse_document(text, "application/yaml")
        result = serve_files.apply_file(
            actor=request.user,
            team=team,
            cluster=cluster,
            document=document,
            dry_run=not apply,
            prune=prune,
            source="ui",
        )
    except (ValidationError, Conflict) as exc:
        errors = error_fields(exc)
        if not isinstance(exc.detail, dict):  # a refusal of the whole file
            errors["file"] = errors.pop("non_field_errors", [])
        context["errors"] = errors
        return render(request, "teams/serve_config.html", context, status=400)
    if apply:
        messages.success(
            request,
            f"Applied to {cluster.name}: {result['changed']} change(s), pushing now."
            if result["changed"]
            else f"Nothing changed on {cluster.name}: the file matches what is deployed.",
        )
        return redirect("dashboard:team_detail", slug=team.slug)
    context["plan"] = result
    return render(request, "teams/serve_config.html", context)


TEAM_COLOURS = ["#0d6efd", "#198754", "#d63384", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#0dcaf0"]


def _colour_nodes(state: dict) -> dict[str, str]:
    """Give each node a GPU fill bar split by team: fragmentation and ownership at a glance."""

    teams = sorted({r["team"] for n in state["nodes"] for r in n["replicas"]})
    colours = {t: TEAM_COLOURS[i % len(TEAM_COLOURS)] for i, t in enumerate(teams)}
    for node in state["nodes"]:
        capacity = Decimal(node["capacity"].get("GPU", "0") or "0")
        per_team: dict[str, Decimal] = {}
        for r in node["replicas"]:
            per_team[r["team"]] = per_team.get(r["team"], Decimal(0)) + Decimal(r["resources"].get("GPU", "0") or "0")
        node["gpu_fill"] = [
            {
                "team": t,
                "gpus": format(g.normalize(), "f"),
                "pct": float(g / capacity * 100) if capacity else 0,
                "colour": colours[t],
            }
            for t, g in sorted(per_team.items())
            if g
        ]
    return colours


def _team_or_404(request: HttpRequest, slug: str) -> Team:
    team = teams_for(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404("No such team")
    return team


def _team_apps(team: Team) -> list[Application]:
    return list(
        Application.objects.filter(team=team).select_related("cluster", "current_revision", "team").order_by("name")
    )


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team_or_404(request, slug)
    apps = _team_apps(team)
    gpu_hours = showback(team, apps)
    return render(
        request,
        "dashboard/team_detail.html",
        {
            "team": team,
            "apps": apps,
            "role": role_in(request.user, team),
            "can_deploy": can(request.user, team, Role.MEMBER),
            "polling": any(not a.settled for a in apps),
            "showback": gpu_hours,
            "charts": [
                f"series=team_gpus_allocated&team={team.slug}&cluster={c}" for c in sorted({a.cluster_id for a in apps})
            ],
        },
    )


@login_required
def team_apps_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team_or_404(request, slug)
    apps = _team_apps(team)
    return render(
        request, "dashboard/_team_apps.html", {"team": team, "apps": apps, "polling": any(not a.settled for a in apps)}
    )


@login_required
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    app = _visible_app(request, pk)
    revisions = list(app.revisions.select_related("author").order_by("-number")[:50])
    runs = app.cluster.sync_runs.order_by("-created_at", "-id")[:10]

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
            "can_edit": can(request.user, app.team, Role.MEMBER),
            "polling": not app.settled,
            "app_id": str(app.pk),
            "is_multiplexed": bool(models)
            or "multiplex" in (app.current_revision.spec.get("import_path", "") if app.current_revision else ""),
            "models": models,
        },
    )


@login_required
def app_status_fragment(request: HttpRequest, pk: int) -> HttpResponse:
    app = _visible_app(request, pk)
    return render(request, "dashboard/_app_status.html", {"app": app, "polling": not app.settled})


@login_required
def app_diff(request: HttpRequest, pk: int) -> HttpResponse:
    app = _visible_app(request, pk)
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
    teams = [t for t in teams_for(request.user).order_by("slug") if can(request.user, t, Role.MEMBER)]
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
    app = _visible_app(request, pk) if pk else None
    if app is not None and not can(request.user, app.team, Role.MEMBER):
        messages.error(request, f"You need the member role in {app.team.slug} to edit its applications.")
        return redirect("dashboard:app_detail", pk=app.pk)
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
    if errors:  # show every problem at once, not only the ones the form itself found
        try:
            normalize_spec(spec)
        except ValidationError as exc:
            errors = {**error_fields(exc), **errors}
    if not errors:
        try:
            if app is None:
                team = teams_for(request.user).filter(slug=values["team"]).first()
                cluster = cluster_by_id(values["cluster"])
                if team is None or not can(request.user, team, Role.MEMBER):
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
        except Conflict as exc:
            errors = error_fields(exc)
    return render(request, "dashboard/app_form.html", _form_context(request, app, rows, values, errors), status=400)


@login_required
@require_POST
def app_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    app = _visible_app(request, pk)
    if not can(request.user, app.team, Role.MEMBER):
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
    app = _visible_app(request, pk)
    if not can(request.user, app.team, Role.MEMBER):
        raise Http404
    if request.POST.get("confirm") != app.name:
        messages.error(request, f"Type the application's name ({app.name}) to confirm deletion.")
        return redirect("dashboard:app_detail", pk=app.pk)
    app_services.application_delete(actor=request.user, application=app, source="ui")
    messages.success(request, f"{app.name} will be removed from {app.cluster.name} with the next push.")
    return redirect("dashboard:team_detail", slug=app.team.slug)
