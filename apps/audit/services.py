from __future__ import annotations

from typing import Any

from django.db.models import Model

from apps.core.middleware import current_request_id
from apps.core.secrets import redact

from .models import AuditEvent


def audit_record(
    *,
    actor: Any,
    action: str,
    obj: Model | None = None,
    team: Any = None,
    before: dict | None = None,
    after: dict | None = None,
    source: str = "api",
    object_type: str | None = None,
    object_repr: str | None = None,
) -> AuditEvent:
    actor = getattr(actor, "user", actor)  # a request principal is recorded as its user
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_label=user.get_username() if user else str(actor or "system"),
        team=team,
        team_slug=getattr(team, "slug", "") or "",
        action=action,
        object_type=object_type or (obj._meta.model_name if obj is not None else ""),
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=(object_repr or (str(obj) if obj is not None else ""))[:200],
        before=redact(before) if before is not None else None,  # secrets never enter the audit log, on any path
        after=redact(after) if after is not None else None,
        source=source,
        request_id=current_request_id() if current_request_id() != "-" else "",
    )


def prune_audit_events(now: Any = None, batch: int = 5000) -> int:
    """Delete audit events older than settings.AUDIT_RETENTION_DAYS (0 keeps them all), a batch at a time.
    The default keeps more than a year: the page and API answer in the same time at a year of 500 teams."""
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    from apps.core.batches import delete_in_batches

    days = settings.AUDIT_RETENTION_DAYS
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return delete_in_batches(AuditEvent.objects.filter(at__lt=cutoff), batch, order="at")
