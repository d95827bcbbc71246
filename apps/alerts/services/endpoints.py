"""A team's webhook endpoints: created with a checked URL and a write-only secret, re-enabled, removed."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from apps.audit.services import audit_record
from apps.teams.models import Team
from workers.clients import webhooks

from ..models import WebhookEndpoint

log = logging.getLogger(__name__)


def webhook_create(
    *, actor: Any, team: Team, url: str, secret: str, format: str = WebhookEndpoint.Format.JSON
) -> WebhookEndpoint:
    errors: dict[str, list[str]] = {}
    fmt = format
    if not url.strip():
        errors["url"] = ["Required: the http(s) URL that receives the signed requests."]
    elif len(url) > 500:
        errors["url"] = ["At most 500 characters."]
    else:
        try:
            webhooks.check_url(url.strip(), allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        except webhooks.UnsafeURL as exc:
            errors["url"] = [f"Refused: the URL {exc}."]
    if len(secret) < 16:
        errors["secret"] = ["Required: at least 16 characters, shared with the receiver to verify signatures."]
    elif len(secret) > 500:
        errors["secret"] = ["At most 500 characters."]
    if fmt not in WebhookEndpoint.Format.values:
        errors["format"] = [f"One of: {', '.join(WebhookEndpoint.Format.values)}."]
    if errors:
        raise ValidationError(errors)
    endpoint = WebhookEndpoint.objects.create(team=team, url=url.strip(), secret=secret, format=fmt, created_by=actor)
    audit_record(
        actor=actor,
        action="webhook.create",
        obj=endpoint,
        team=team,
        after={"url": endpoint.url, "format": fmt, "secret": secret},
        object_repr=f"webhook {endpoint.url}"[:200],
    )
    return endpoint


def webhook_enable(*, actor: Any, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=True, disabled_reason="", consecutive_failures=0)
    endpoint.refresh_from_db()
    audit_record(
        actor=actor,
        action="webhook.enable",
        obj=endpoint,
        team=endpoint.team,
        object_repr=f"webhook {endpoint.url}"[:200],
    )
    return endpoint


def webhook_delete(*, actor: Any, endpoint: WebhookEndpoint) -> None:
    audit_record(
        actor=actor,
        action="webhook.delete",
        obj=endpoint,
        team=endpoint.team,
        before={"url": endpoint.url, "format": endpoint.format},
        object_repr=f"webhook {endpoint.url}"[:200],
    )
    endpoint.delete()
