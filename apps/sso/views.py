"""Sign-in through the OpenID provider, its callback, and a logout that ends the provider's session too."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.audit.services import audit_record

from . import oidc
from .config import enabled
from .services import SignInRefused, sign_in

logger = logging.getLogger(__name__)

NEXT_KEY = "sso_next"
SSO_SESSION_KEY = "sso_session"


def _safe_next(request: HttpRequest, value: str | None) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()}):
        return value
    return reverse("dashboard:welcome")


def _refused(request: HttpRequest, reason: str, status: int = 403) -> HttpResponse:
    return render(request, "registration/sso_failed.html", {"reason": reason}, status=status)


@require_GET
def start(request: HttpRequest) -> HttpResponse:
    if not enabled():
        raise Http404("Single sign-on is not configured")
    request.session[NEXT_KEY] = _safe_next(request, request.GET.get("next"))  # kept across the provider's pages
    try:
        return oidc.start(request, request.build_absolute_uri(reverse("sso_callback")))
    except oidc.SignInFailed as exc:
        return _refused(request, str(exc), status=502)


@require_GET
def callback(request: HttpRequest) -> HttpResponse:
    if not enabled():
        raise Http404("Single sign-on is not configured")
    try:
        claims = oidc.finish(request)
        user, changes, first = sign_in(issuer=settings.OIDC_ISSUER, claims=claims)
    except (oidc.SignInFailed, SignInRefused) as exc:
        logger.warning("single sign-on refused: %s", exc)
        audit_record(actor=None, action="user.sso_refused", after={"reason": str(exc)[:300]}, source="sso")
        return _refused(request, str(exc))
    nxt = request.session.pop(NEXT_KEY, None)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SSO_SESSION_KEY] = True  # logout ends the provider's session too (the ID token is not kept)
    text = f"Signed in as {user.get_username()} through {settings.OIDC_PROVIDER_NAME}."
    if changes:
        text += " Your groups: " + "; ".join(changes) + "."
    messages.success(request, text)
    if first and nxt in (None, "/", reverse("dashboard:home")):
        return redirect("dashboard:welcome")  # a newcomer starts at Getting started, not an empty home page
    return redirect(_safe_next(request, nxt))


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Log out here; when the session came from the provider, end the provider's session as well."""
    from_provider = bool(request.session.get(SSO_SESSION_KEY))
    logout(request)
    if from_provider and enabled():
        url = oidc.logout_url(request.build_absolute_uri(reverse("login")))
        if url:
            return redirect(url)
    return redirect("login")
