"""API tokens: a team's, one's own, and the command-line client's browser sign-in."""

from __future__ import annotations

from datetime import datetime, time

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from apps.core.errors import error_fields
from apps.teams import cli_login
from apps.teams import services as team_services
from apps.teams.models import ApiToken, Role
from apps.teams.principal import principal_of

from ..forms import (
    TokenForm,
    form_errors,
)
from .common import team_or_404


@login_required
def tokens(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_or_404(request, slug, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    created_secret = None
    values = {k: request.POST.get(k, "") for k in ("name", "role", "expires")}
    if request.method == "POST":
        form = TokenForm(request.POST)
        errors = {} if form.is_valid() else form_errors(form, {"expires": "expires_at"})
        day = form.cleaned_data.get("expires") if not errors else None
        expires_at = timezone.make_aware(datetime.combine(day, time(23, 59, 59))) if day else None
        if not errors:
            try:
                token, created_secret = team_services.token_create(
                    actor=principal_of(request),
                    name=form.cleaned_data["name"],
                    team=team,
                    role=form.cleaned_data["role"] or Role.MEMBER,
                    expires_at=expires_at,
                    source="ui",
                )
                values = {"name": "", "role": "", "expires": ""}
            except ValidationError as exc:
                errors = error_fields(exc)
    return render(
        request,
        "teams/tokens.html",
        {
            "team": team,
            "tokens": team.api_tokens.select_related("user").order_by("-created_at"),
            "errors": errors,
            "values": values,
            "secret": created_secret,
            "roles": Role.choices,
        },
        status=400 if errors else 200,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Revoke one of the team's tokens (admins): it stops working at once."""
    team = team_or_404(request, slug, Role.ADMIN)
    token = get_object_or_404(ApiToken, pk=pk, team=team)
    team_services.token_revoke(actor=request.user, token=token, source="ui")
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked; it stops working now.")
    return redirect("dashboard:team_tokens", slug=team.slug)


@login_required
def my_tokens(request: HttpRequest) -> HttpResponse:
    """The user's own tokens (the ones POST /api/v1/auth/token/ mints, and personal ones), to see and revoke."""
    tokens = ApiToken.objects.filter(user=request.user, team__isnull=True).order_by("-created_at")
    page = Paginator(tokens, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "teams/my_tokens.html",
        {
            "tokens": page,
            "ttl_days": settings.API_LOGIN_TOKEN_TTL_DAYS,
            "email_verified": team_services.email_is_verified(request.user),
        },
    )


@login_required
@require_POST
def my_token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's own personal tokens."""
    token = get_object_or_404(ApiToken, pk=pk, user=request.user, team__isnull=True)
    team_services.token_revoke(actor=request.user, token=token, source="ui")
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked; it stops working now.")
    return redirect("dashboard:my_tokens")


@login_required
def cli_login_page(request: HttpRequest, request_id: str) -> HttpResponse:
    """``servectl login --browser`` sends people here: compare the code, then allow or deny."""
    error = ""
    try:
        entry = cli_login.pending(request_id)
        if request.method == "POST":
            allow = request.POST.get("decision") == "allow"
            cli_login.decide(request_id=request_id, user=request.user, allow=allow, code=request.POST.get("code", ""))
            return render(request, "teams/cli_login.html", {"done": "allowed" if allow else "denied"})
    except cli_login.CliLoginGone as exc:
        return render(request, "teams/cli_login.html", {"gone": str(exc)}, status=410)
    except cli_login.WrongCode as exc:
        error = str(exc)
        entry = cli_login.pending(request_id)
    if entry["state"] != "pending":
        return render(request, "teams/cli_login.html", {"gone": f"This sign-in was already {entry['state']}."}, 410)
    context = {
        "requested_from": entry.get("from", ""),
        "requested_at": parse_datetime(entry["at"]) if entry.get("at") else None,
        "this_browser": request.META.get("REMOTE_ADDR", ""),
        "error": error,
    }
    return render(request, "teams/cli_login.html", context, status=400 if error else 200)
