"""Cluster pages: the list, one cluster as the principal may read it, and staff's actions on it."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import TextField
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.applications.models import Application
from apps.applications.services import application_adopt
from apps.clusters.models import Cluster, SyncRun
from apps.clusters.selectors import last_sync_runs, unmanaged_apps
from apps.clusters.services import unmanaged_remove
from apps.compaction.inputs import drained_node_ids, serve_in_motion
from apps.compaction.models import CompactionPlan
from apps.core.errors import Conflict, error_text
from apps.core.jobs import enqueue
from apps.deploys.selectors import cluster_state
from apps.deploys.visibility import ClusterLens
from apps.metrics import gpus
from apps.teams.models import Team
from apps.teams.principal import principal_of

from .common import gpu_fill, show_errors, team_colours


@login_required
def cluster_list(request: HttpRequest) -> HttpResponse:
    clusters = list(Cluster.objects.order_by("name").prefetch_related("pools"))
    last = last_sync_runs(clusters)
    lens = ClusterLens(principal_of(request), [c.pk for c in clusters])
    rows = [(c, last.get(c.pk), lens.drift(c), lens.health_message(c)) for c in clusters]
    return render(request, "dashboard/cluster_list.html", {"rows": rows})


@login_required
def cluster_detail(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    principal = principal_of(request)
    lens = ClusterLens(principal, [cluster.pk])
    runs = Paginator(cluster.sync_runs.defer("config_snapshot").order_by("-created_at", "-id"), 20).get_page(
        request.GET.get("page")
    )
    show_errors(lens, runs)
    state = lens.state(cluster_state(cluster))

    plans = CompactionPlan.objects.filter(cluster=cluster).exclude(state=CompactionPlan.State.SUPERSEDED)[:5]
    stored = _migrating(cluster) if principal.is_staff else {}

    return render(
        request,
        "dashboard/cluster_detail.html",
        {
            "cluster": cluster,
            "unmanaged": unmanaged_apps(cluster) if principal_of(request).is_staff else [],
            "all_teams": Team.objects.order_by("slug") if principal_of(request).is_staff else [],
            "reconcile_interval": settings.RECONCILE_INTERVAL_S,
            "runs": runs,
            "state": state,
            "drift": lens.drift(cluster),
            "health_message": lens.health_message(cluster),
            "plans": plans,
            "drained": drained_node_ids(cluster),
            "serve_moving": [m for m in serve_in_motion(stored) if "PENDING_MIGRATION" in m],
            "executing": next((p for p in plans if p.state == CompactionPlan.State.EXECUTING), None),
            "cluster_id": str(cluster.pk),
            "team_colours": _colour_nodes(state),
            "gpu_view": gpus.for_display(gpus.view_for(principal, cluster)),
        },
    )


@login_required
@require_POST
def cluster_sync(request: HttpRequest, pk: int) -> HttpResponse:
    cluster = get_object_or_404(Cluster, pk=pk)
    if not principal_of(request).is_staff:
        raise Http404
    if enqueue("workers.tasks.sync.sync_cluster", cluster.pk, SyncRun.Trigger.MANUAL, True):
        messages.success(request, f"Push to {cluster.name} queued.")
    else:
        messages.error(request, "The task queue is unavailable; the reconcile pushes when it is back.")
    return redirect("dashboard:cluster_detail", pk=pk)


@login_required
@require_POST
def cluster_adopt(request: HttpRequest, pk: int) -> HttpResponse:

    if not principal_of(request).is_staff:
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
    except (ValidationError, Http404, Conflict) as exc:
        messages.error(request, f"{serve_name} was not adopted: {error_text(exc)}")
        return redirect("dashboard:cluster_detail", pk=pk)
    messages.success(request, f"{serve_name} is now {team.slug}/{app.name}; it keeps running unchanged.")
    return redirect("dashboard:app_detail", pk=app.pk)


@login_required
@require_POST
def cluster_unmanaged_remove(request: HttpRequest, pk: int) -> HttpResponse:

    if not principal_of(request).is_staff:
        raise Http404
    cluster = get_object_or_404(Cluster, pk=pk)
    name = request.POST.get("app", "")
    if request.POST.get("confirm", "") != name:
        messages.error(request, f"Type the app's name ({name}) to confirm its removal.")
        return redirect("dashboard:cluster_detail", pk=pk)
    try:
        unmanaged_remove(actor=request.user, cluster=cluster, name=name, source="ui")
    except (Http404, Conflict) as exc:
        messages.error(request, f"{name} was not removed: {error_text(exc)}")
        return redirect("dashboard:cluster_detail", pk=pk)
    messages.success(request, f"{name} will be removed from {cluster.name} with the next push (queued now).")
    return redirect("dashboard:cluster_detail", pk=pk)


def _migrating(cluster: Cluster) -> dict[str, dict]:
    """The stored status of the apps Serve is migrating on its own: found by the database in the status's text,
    so a cluster of 10,000 apps does not parse 10,000 statuses for the one banner."""
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .annotate(status_text=Cast("status", TextField()))
        .filter(status_text__contains="PENDING_MIGRATION")
        .select_related("team")
        .only("name", "adopted_serve_name", "status", "team__slug")
    )
    return {a.serve_name: a.status for a in apps}


def _colour_nodes(state: dict) -> dict[str, str]:
    """Give each node a GPU fill bar split by team: fragmentation and ownership at a glance."""

    other = "other teams"
    for n in state["nodes"]:
        for r in n["replicas"]:
            r.setdefault("team", other)  # another team's replica, reduced to what it uses (ClusterLens.state)
    colours = team_colours({r["team"] for n in state["nodes"] for r in n["replicas"]})
    for node in state["nodes"]:
        node["gpu_fill"] = gpu_fill(node["replicas"], Decimal(node["capacity"].get("GPU", "0") or "0"), colours)
    return colours
