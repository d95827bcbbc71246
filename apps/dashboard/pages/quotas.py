"""Quota pages: a team's quota and its requests, and staff's review of every request."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_by_id
from apps.core.errors import error_fields, error_text
from apps.quotas.models import QuotaRequest
from apps.quotas.selectors import quotas_by_team_pool
from apps.quotas.services import fmt, quota_request_create, quota_request_decide
from apps.teams.models import Role
from apps.teams.principal import principal_of

from ..forms import (
    QuotaDecisionForm,
    QuotaRequestForm,
)
from ..selectors import quota_rows
from .common import team_or_404


@login_required
def quota(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_or_404(request, slug)
    is_admin = principal_of(request).can(team, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values = {k: request.POST.get(k, "") for k in ("cluster", "pool", "gpus", "reason")}
    if request.method == "POST":
        if not is_admin:
            raise Http404
        form = QuotaRequestForm(request.POST)
        data = form.cleaned_data if form.is_valid() else {}
        cluster = cluster_by_id(data.get("cluster"))
        try:
            if cluster is None:
                raise ValidationError({"cluster": ["Choose a cluster."]})
            req = quota_request_create(
                actor=request.user,
                team=team,
                cluster=cluster,
                pool_name=data["pool"],
                gpus=data["gpus"],
                reason=data["reason"],
                source="ui",
            )
            messages.success(
                request,
                f"Asked for {fmt(req.gpus)} GPUs in {req.pool.name} on {cluster.name}; a platform admin decides.",
            )
            return redirect("dashboard:team_quota", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
    rows = quota_rows(team)
    return render(
        request,
        "teams/quota.html",
        {
            "team": team,
            "rows": rows,
            "charts": [
                f"series=team_gpus_allocated&team={team.slug}&cluster={c}"
                for c in sorted({r["cluster"].pk for r in rows})
            ],
            "is_admin": is_admin,
            "errors": errors,
            "values": values,
            "clusters": Cluster.objects.prefetch_related("pools").order_by("name"),
            "requests": team.quota_requests.select_related("pool", "cluster", "requested_by", "decided_by")[:50],
        },
        status=400 if errors else 200,
    )


@login_required
def quota_requests_review(request: HttpRequest) -> HttpResponse:
    if not principal_of(request).is_staff:
        raise Http404
    if request.method == "POST":
        form = QuotaDecisionForm(request.POST)
        if not form.is_valid():
            raise Http404  # only a tampered form names no request or decision
        req = get_object_or_404(QuotaRequest, pk=form.cleaned_data["request"])
        approve = form.cleaned_data["decision"] == "approve"
        try:
            quota_request_decide(
                actor=request.user, request=req, approve=approve, comment=form.cleaned_data["comment"], source="ui"
            )
            messages.success(
                request,
                f"Request from {req.team.slug} {'approved: quota set to ' + fmt(req.gpus) if approve else 'rejected'}.",
            )
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        return redirect("dashboard:quota_requests")
    pending = QuotaRequest.objects.filter(state=QuotaRequest.State.PENDING).select_related(
        "team", "pool", "cluster", "requested_by"
    )
    decided = QuotaRequest.objects.exclude(state=QuotaRequest.State.PENDING).select_related(
        "team", "pool", "cluster", "decided_by"
    )[:30]
    pending = list(pending)
    current = quotas_by_team_pool((req.team_id, req.pool_id) for req in pending)
    rows = []
    for req in pending:
        quota = current.get((req.team_id, req.pool_id))
        rows.append((req, fmt(quota.gpus) if quota else "none"))
    return render(request, "teams/quota_requests.html", {"pending": rows, "decided": decided})
