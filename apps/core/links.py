"""Links that leave the request: in mails and webhooks, pointing at the dashboard people open (PUBLIC_URL)."""

from __future__ import annotations

from django.conf import settings


def public_url(path: str) -> str:
    return settings.PUBLIC_URL.rstrip("/") + path
