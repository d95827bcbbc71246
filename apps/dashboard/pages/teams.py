"""A team's page, its apps' live status and its Serve config file tab."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.applications import serve_files
from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.core.errors import Conflict, error_fields
from apps.core.ids import parse_id
from apps.core.links import public_url
from apps.metrics import gpus
from apps.teams.models import Role, Team
from apps.teams.principal import principal_of

from ..selectors import showback
from .common import team_or_404


def _team_apps(team: Team) -> list[Application]:
    return list(
        Application.objects.filter(team=team).select_related("cluster", "current_revision", "team").order_by("name")
    )


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_or_404(request, slug)
    apps = _team_apps(team)
    gpu_hours = showback(team, apps)
    return render(
        request,
        "dashboard/team_detail.html",
        {
            "team": team,
            "apps": apps,
            "role": principal_of(request).role(team),
            "can_deploy": principal_of(request).can(team, Role.MEMBER),
            "polling": any(not a.settled for a in apps),
            "showback": gpu_hours,
            "charts": [
                f"series=team_gpus_allocated&team={team.slug}&cluster={c}" for c in sorted({a.cluster_id for a in apps})
            ],
            "ray_addresses": ray_addresses(team, apps),
            "gpu_use": gpus.apps_use(apps),
        },
    )


def ray_addresses(team: Team, apps: list[Application]) -> list[tuple[str, str]]:
    """(cluster name, the address Ray's own `serve` CLI takes for the team's view of it), for every cluster the
    team has apps or a quota on."""
    ids = {a.cluster_id for a in apps} | set(team.quotas.values_list("cluster_id", flat=True))
    names = Cluster.objects.filter(pk__in=ids).order_by("name").values_list("name", flat=True)
    return [(name, public_url(f"/ray/{team.slug}/{name}")) for name in names]


@login_required
def team_apps_fragment(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_or_404(request, slug)
    apps = _team_apps(team)
    return render(
        request, "dashboard/_team_apps.html", {"team": team, "apps": apps, "polling": any(not a.settled for a in apps)}
    )


@login_required
def team_serve_config(request: HttpRequest, slug: str) -> HttpResponse:
    """Apply a Serve config file (upload or paste): the plan first, then apply; export the team's own."""

    team = team_or_404(request, slug)
    clusters = list(Cluster.objects.order_by("name"))
    context: dict = {"team": team, "clusters": clusters, "can_deploy": principal_of(request).can(team, Role.MEMBER)}
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
        if "non_field_errors" in errors and len(errors) == 1:  # a refusal of the whole file
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
