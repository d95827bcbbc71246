"""Pages: incidents (list, one, the badge), rules, a team's webhooks and its waste report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from rest_framework import serializers

from apps.alerts import services, shared
from apps.alerts.api import SETTINGS, AlertRuleInputSerializer, rule_scope_unchanged
from apps.alerts.filters import IncidentFilter
from apps.alerts.kinds import KINDS, effective_params
from apps.alerts.models import AlertRule, WasteReport, WebhookEndpoint
from apps.alerts.selectors import disabled_webhooks, open_count, visible_incidents, visible_rules
from apps.alerts.waste import compute
from apps.core.errors import error_fields, error_text
from apps.core.fields import parse
from apps.core.roles import Role
from apps.teams.principal import principal_of


@login_required
def incident_list(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    qs = visible_incidents(principal)
    params = request.GET.copy()
    if "state" not in params:
        params["state"] = "open"
    if params.get("state") == "all":
        params.pop("state")
    flt = IncidentFilter(params, queryset=qs)
    rows = flt.qs if flt.is_valid() else qs.none()
    page = Paginator(rows.order_by("-opened_at", "-id"), 50).get_page(request.GET.get("page"))
    page.object_list = shared.views(principal, list(page.object_list))
    teams = list(principal.teams())
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
            "disabled_webhooks": disabled_webhooks(principal.team_ids(Role.ADMIN) if not principal.is_staff else []),
        },
    )


@login_required
def incident_detail(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    incident = get_object_or_404(visible_incidents(principal), pk=pk)
    view = shared.view(principal, incident, with_deliveries=True)
    return render(
        request,
        "alerts/incident.html",
        {
            "incident": view,
            "kind": KINDS[incident.kind],
            "deliveries": view.deliveries,
            "params": effective_params(incident.kind, incident.rule.params),
            "can_ack": view.can_ack and not view.acknowledged,
            "shared": shared.is_shared(incident) and not principal.is_staff,
        },
    )


@login_required
@require_POST
def incident_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    principal = principal_of(request)
    incident = get_object_or_404(visible_incidents(principal), pk=pk)
    if not shared.view(principal, incident).can_ack:
        raise Http404
    services.acknowledge(actor=principal, incident=incident)
    for_whom = " for your team" if shared.is_shared(incident) and not principal.is_staff else ""
    messages.success(request, f"Incident #{incident.pk} acknowledged{for_whom}.")
    return redirect("dashboard:incident_detail", pk=incident.pk)


@login_required
def incident_badge(request: HttpRequest) -> HttpResponse:
    """The navbar badge, refreshed with htmx: open incidents nobody acknowledged."""
    return render(request, "alerts/_badge.html", {"open_incidents": open_count(principal_of(request))})


@login_required
def rules_page(request: HttpRequest) -> HttpResponse:
    """Rules by kind: the default and every override the user may read; team admins add or tune overrides."""
    errors: dict[str, list[str]] = {}
    status = 200
    principal = principal_of(request)
    admin_teams = list(principal.teams(Role.ADMIN))
    if request.method == "POST":
        data = _rule_form(request)
        rule_id = request.POST.get("rule")
        try:
            if rule_id:
                rule = get_object_or_404(visible_rules(principal), pk=rule_id)
                if request.POST.get("delete"):
                    _may_change(request, rule)
                    services.rule_delete(actor=request.user, rule=rule)
                    messages.success(request, f"Rule removed: {rule.scope_label} now follows the broader rule.")
                    return redirect("dashboard:alert_rules")
                _may_change(request, rule)
                body = parse(AlertRuleInputSerializer, data)
                rule_scope_unchanged(rule, body)
                services.rule_update(actor=principal, rule=rule, **{k: body[k] for k in SETTINGS if k in body})
                messages.success(request, f"Saved {rule}.")
            else:
                body = parse(AlertRuleInputSerializer, data)
                rule = services.rule_create(
                    actor=principal,
                    kind=body.get("kind", ""),
                    team=body.get("team"),
                    application=body.get("application"),
                    **{k: body[k] for k in SETTINGS if k in body},
                )
                messages.success(request, f"Added {rule}.")
            return redirect("dashboard:alert_rules")
        except (ValidationError, serializers.ValidationError, PermissionDenied) as exc:
            invalid = not isinstance(exc, PermissionDenied)
            errors = error_fields(exc) if invalid else {"detail": [str(exc)]}
            messages.error(request, error_text(exc) if invalid else str(exc))
            status = 400 if invalid else 403
    rules = list(visible_rules(principal).order_by("kind", "team__slug", "id"))
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
        status=status,
    )


def _editable(request: HttpRequest, rule: AlertRule) -> bool:
    if rule.team_id is None:
        return principal_of(request).is_staff
    return principal_of(request).can(rule.team, Role.ADMIN)


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
    principal = principal_of(request)
    team = principal.teams().filter(slug=slug).first()
    if team is None:
        raise Http404
    is_admin = principal.can(team, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values = {"url": "", "format": "json"}
    if request.method == "POST" and not is_admin:
        raise Http404
    if request.method == "POST":
        values = {"url": request.POST.get("url", ""), "format": request.POST.get("format", "json")}
        try:
            endpoint = services.webhook_create(
                actor=request.user,
                team=team,
                url=values["url"],
                secret=request.POST.get("secret", ""),
                format=values["format"],
            )
            messages.success(request, f"Added a webhook to {endpoint.url}. Its secret is not shown again.")
            return redirect("dashboard:team_webhooks", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
    endpoints = []
    # Webhook URLs carry tokens (a Slack URL is its own secret): the team's admins see them, as in the API.
    for e in team.webhooks.all() if is_admin else []:
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


def _admins_webhook(request: HttpRequest, slug: str, pk: int) -> WebhookEndpoint:
    """One of the team's endpoints, for the team's admins (anyone else: 404, as the page shows them nothing)."""
    principal = principal_of(request)
    team = principal.teams().filter(slug=slug).first()
    if team is None or not principal.can(team, Role.ADMIN):
        raise Http404
    return get_object_or_404(team.webhooks, pk=pk)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    endpoint = _admins_webhook(request, slug, pk)
    services.webhook_delete(actor=request.user, endpoint=endpoint)
    messages.success(request, f"Removed the webhook to {endpoint.url}.")
    return redirect("dashboard:team_webhooks", slug=slug)


@login_required
@require_POST
def webhook_enable(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    endpoint = _admins_webhook(request, slug, pk)
    services.webhook_enable(actor=request.user, endpoint=endpoint)
    messages.success(request, f"Re-enabled the webhook to {endpoint.url}.")
    return redirect("dashboard:team_webhooks", slug=slug)


@login_required
def team_waste(request: HttpRequest, slug: str) -> HttpResponse:
    team = principal_of(request).teams().filter(slug=slug).first()
    if team is None:
        raise Http404
    now = timezone.now()
    report = compute(team, now - timedelta(days=7), now, now=now)
    past = WasteReport.objects.filter(team=team).only("id", "period_start", "period_end", "body")[:8]
    return render(request, "alerts/waste.html", {"team": team, "report": report, "past": past})
