"""``manage.py check`` (and every process start) refuses a half-configured or malformed sign-on setup."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning

from .config import parse_group_teams


@register()
def sso_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if settings.OIDC_ISSUER:
        if not settings.OIDC_ISSUER.startswith(("https://", "http://")):
            errors.append(Error("OIDC_ISSUER must be an http(s) URL", id="sso.E001"))
        if not settings.OIDC_CLIENT_ID:
            errors.append(Error("OIDC_CLIENT_ID is required when OIDC_ISSUER is set", id="sso.E002"))
        if not settings.OIDC_CLIENT_SECRET:
            errors.append(Error("OIDC_CLIENT_SECRET is required when OIDC_ISSUER is set", id="sso.E003"))
        if "openid" not in settings.OIDC_SCOPES.split():
            errors.append(Error("OIDC_SCOPES must include openid", id="sso.E004"))
    try:
        parse_group_teams(settings.OIDC_GROUP_TEAMS)
    except ValueError as exc:
        errors.append(Error(str(exc), id="sso.E005"))
    if not settings.PASSWORD_SIGNUP and not settings.OIDC_ISSUER:
        errors.append(
            CheckWarning(
                "PASSWORD_SIGNUP is off and OIDC_ISSUER is not set: only staff can create accounts", id="sso.W001"
            )
        )
    return errors
