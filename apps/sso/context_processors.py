from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def sign_in_options(request: HttpRequest) -> dict[str, object]:
    return {
        "sso_enabled": bool(settings.OIDC_ISSUER),
        "sso_name": settings.OIDC_PROVIDER_NAME,
        "password_signup": bool(settings.PASSWORD_SIGNUP),
    }
