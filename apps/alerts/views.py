"""Pages: incidents (list, one, the badge), rules, a team's webhooks and its waste report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from rest_framework.exceptions import PermissionDenied, ValidationError

from apps.core.fields import error_fields, error_text
from apps.core.roles import Role
from apps.teams.selectors import can, teams_for

from . import services
from .filters import IncidentFilter
from .kinds import KINDS, effective_params
from .models import AlertRule, Incident, WasteReport
from .selectors import disabled_webhooks, open_count, visible_incidents, visible_rules
from .waste import compute


@login_required
def incident_list(request: HttpRequest) -> HttpResponse:
    qs = visible_incidents(request.user)
    params = request.GET.copy()
    if "state" not in params:
        params["state"] = "open"
    if params.get("state") == "all":
        params.pop("state")
    flt = IncidentFilter(params, queryset=qs)
    rows = flt.qs if flt.is_valid() else qs.none()
    page = Paginator(rows.order_by("-opened_at", "-id"), 50).get_page(request.GET.get("page"))
    teams = list(teams_for(request.user))
    return render(
        request,
        "alerts/incidents.html",
        {
            "page": page,
            "errors": flt.errors if not flt.is_valid() else {},
            "state": request.GET.get("state", "open"),
            "kinds": KINDS.values(),
            "teams": teams,
            "selected": request.GET,
            "disabled_webhooks": disabled_webhooks([t.pk for t in teams]),
        },
    )


@login_required
def incident_detail(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_object_or_404(visible_incidents(request.user), pk=pk)
    deliveries = incident.deliveries.select_related("endpoint").prefetch_related("attempt_rows")
    return render(
        request,
        "alerts/incident.html",
        {
            "incident": incident,
            "kind": KINDS[incident.kind],
            "deliveries": deliveries,
            "params": effective_params(incident.kind, incident.rule.params),
            "can_ack": _can_ack(request.user, incident),
        },
    )


def _can_ack(user: Any, incident: Incident) -> bool:
    if user.is_staff:
        return True
    teams = [incident.team] if incident.team_id else list(teams_for(user))
    return any(can(user, t, Role.MEMBER) for t in teams)


@login_required
@require_POST
def incident_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_object_or_404(visible_incidents(request.user), pk=pk)
    if not _can_ack(request.user, incident):
        raise Http404
    services.acknowledge(actor=request.user, incident=incident)
    messages.success(request, f"Incident #{incident.pk} acknowledged.")
    return redirect("dashboard:incident_detail", pk=incident.pk)


@login_required
def incident_badge(request: HttpRequest) -> HttpResponse:
    """The navbar badge, refreshed with htmx: open incidents nobody acknowledged."""
    return render(request, "alerts/_badge.html", {"open_incidents": open_count(request.user)})


@login_required
def rules_page(request: HttpRequest) -> HttpResponse:
    """Rules by kind: the default and every override the user may read; team admins add or tune overrides."""
    errors: dict[str, list[str]] = {}
    teams = list(teams_for(request.user))
    admin_teams = [t for t in teams if can(request.user, t, Role.ADMIN)]
    if request.method == "POST":
        data = _rule_form(request)
        rule_id = request.POST.get("rule")
        try:
            if rule_id:
                rule = get_object_or_404(visible_rules(request.user), pk=rule_id)
                if request.POST.get("delete"):
                    _may_change(request, rule)
                    services.rule_delete(actor=request.user, rule=rule)
                    messages.success(request, f"Rule removed: {rule.scope_label} now follows the broader rule.")
                    return redirect("dashboard:alert_rules")
                _may_change(request, rule)
                services.rule_save(
                    actor=request.user,
                    data=data,
                    rule=rule,
                    can_admin_team=lambda t: can(request.user, t, Role.ADMIN),
                )
                messages.success(request, f"Saved {rule}.")
            else:
                rule = services.rule_save(
                    actor=request.user, data=data, can_admin_team=lambda t: can(request.user, t, Role.ADMIN)
                )
                messages.success(request, f"Added {rule}.")
            return redirect("dashboard:alert_rules")
        except (ValidationError, PermissionDenied) as exc:
            errors = error_fields(exc) if isinstance(exc, ValidationError) else {"detail": [str(exc.detail)]}
            messages.error(request, error_text(exc) if isinstance(exc, ValidationError) else str(exc.detail))
    rules = list(visible_rules(request.user).order_by("kind", "team__slug", "id"))
    grouped = []
    for kind in KINDS.values():
        grouped.append(
            {
                "kind": kind,
                "rules": [
                    {"rule": r, "params": effective_params(r.kind, r.params), "editable": _editable(request, r)}
                    for r in rules
                    if r.kind == kind.name
                ],
            }
        )
    return render(
        request,
        "alerts/rules.html",
        {"grouped": grouped, "admin_teams": admin_teams, "errors": errors, "kinds": KINDS.values()},
    )


def _editable(request: HttpRequest, rule: AlertRule) -> bool:
    if rule.team_id is None:
        return request.user.is_staff
    return can(request.user, rule.team, Role.ADMIN)


def _may_change(request: HttpRequest, rule: AlertRule) -> None:
    if not _editable(request, rule):
        raise PermissionDenied("You may not change this rule.")


def _rule_form(request: HttpRequest) -> dict[str, Any]:
    data: dict[str, Any] = {}
    post = request.POST
    if post.get("kind"):
        data["kind"] = post["kind"]
    if post.get("team"):
        data["team"] = post["team"]
    if post.get("application"):
        data["application"] = _int(post["application"])
    if post.get("form") == "edit" or post.get("kind"):
        data["enabled"] = post.get("enabled") == "on"
        data["email"] = post.get("email") == "on"
        if post.get("quiet_period_s", "") != "":
            data["quiet_period_s"] = _int(post["quiet_period_s"])
        params = {}
        for key, value in post.items():
            if key.startswith("param_") and value.strip() != "":
                params[key[6:]] = _num(value)
        data["params"] = params
    return data


def _int(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        return value


def _num(value: str) -> Any:
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


@login_required
def team_webhooks(request: HttpRequest, slug: str) -> HttpResponse:
    team = teams_for(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404
    is_admin = can(request.user, team, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values = {"url": "", "format": "json"}
    if request.method == "POST" and not is_admin:
        raise Http404
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "delete":
                endpoint = get_object_or_404(team.webhooks, pk=request.POST.get("endpoint"))
                services.webhook_delete(actor=request.user, endpoint=endpoint)
                messages.success(request, f"Removed the webhook to {endpoint.url}.")
            elif action == "enable":
                endpoint = get_object_or_404(team.webhooks, pk=request.POST.get("endpoint"))
                services.webhook_enable(actor=request.user, endpoint=endpoint)
                messages.success(request, f"Re-enabled the webhook to {endpoint.url}.")
            else:
                values = {"url": request.POST.get("url", ""), "format": request.POST.get("format", "json")}
                endpoint = services.webhook_create(
                    actor=request.user,
                    team=team,
                    data={"url": values["url"], "secret": request.POST.get("secret", ""), "format": values["format"]},
                )
                messages.success(request, f"Added a webhook to {endpoint.url}. Its secret is not shown again.")
            return redirect("dashboard:team_webhooks", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
    endpoints = []
    for e in team.webhooks.all():
        attempts = list(
            e.deliveries.order_by("-created_at").values_list(
                "attempt_rows__at", "attempt_rows__ok", "attempt_rows__status_code", "attempt_rows__answer"
            )[:5]
        )
        endpoints.append({"endpoint": e, "attempts": [a for a in attempts if a[0]]})
    return render(
        request,
        "alerts/webhooks.html",
        {"team": team, "endpoints": endpoints, "errors": errors, "values": values, "is_admin": is_admin},
    )


@login_required
def team_waste(request: HttpRequest, slug: str) -> HttpResponse:
    team = teams_for(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404
    now = timezone.now()
    report = compute(team, now - timedelta(days=7), now)
    past = WasteReport.objects.filter(team=team).only("id", "period_start", "period_end", "body")[:8]
    return render(request, "alerts/waste.html", {"team": team, "report": report, "past": past})
