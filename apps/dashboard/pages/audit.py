"""The audit log page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.audit.selectors import audit_events_for, filter_events
from apps.core.errors import error_text
from apps.teams.principal import principal_of


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    qs = audit_events_for(principal_of(request))
    params = {k: request.GET.get(k, "") for k in ("team", "action", "actor", "q", "since", "until")}
    try:
        qs = filter_events(qs, {k: v for k, v in params.items() if v})
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    page = Paginator(qs.order_by("-at", "-id"), 50).get_page(request.GET.get("page"))
    query = "&".join(f"{k}={v}" for k, v in params.items() if v)
    return render(
        request,
        "teams/audit.html",
        {"page": page, "params": params, "query": query, "is_staff": principal_of(request).is_staff},
    )
