"""Notification: one delivery per channel and team told, each with its team's view; delivery with backoff."""

from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.core.jobs import enqueue
from apps.core.links import public_url
from apps.teams.selectors import admin_emails
from workers.clients import webhooks

from .. import shared
from ..kinds import KINDS
from ..models import Delivery, DeliveryAttempt, Incident, WebhookEndpoint

log = logging.getLogger(__name__)


def incident_url(incident: Incident) -> str:
    return public_url(reverse("dashboard:incident_detail", args=[incident.pk]))


def teams_told(incident: Incident) -> list[int]:
    """The team of a team's incident; for a cluster's, every team with an application on the cluster."""
    if incident.team_id:
        return [incident.team_id]
    if incident.cluster_id:
        return list(
            Application.objects.filter(cluster_id=incident.cluster_id, deleted_at__isnull=True)
            .values_list("team_id", flat=True)
            .distinct()
        )
    return []


def email_recipients(incident: Incident) -> list[str]:
    """Everyone mailed about the incident, all channels together (each team's admins get their own mail)."""
    return sorted({r for _, rs in _mail_groups(incident) for r in rs})


def _mail_groups(incident: Incident) -> list[tuple[int | None, list[str]]]:
    """One mail per team told, to its admins (no team reads another's addresses), and one to staff where the kind
    is staff's or no team is told."""
    team_ids = teams_told(incident)
    groups: list[tuple[int | None, list[str]]] = [(t, admin_emails([t])) for t in team_ids]
    if KINDS[incident.kind].staff_only or not team_ids:
        staff = (
            get_user_model()
            .objects.filter(is_staff=True, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
        groups.append((None, sorted(set(staff))))
    return [(t, rs) for t, rs in groups if rs]


def payload(incident: Incident, event: str, fmt: str, team_id: int | None = None) -> dict[str, Any]:
    """The notification body for one team's channel (its own view of a shared incident) or staff's (None)."""
    app = incident.application
    summary = (
        shared.team_summary(incident, shared.own_names_of_team(incident, team_id))
        if team_id is not None
        else incident.summary
    )
    body: dict[str, Any] = {
        "incident": incident.pk,
        "state": "open" if event == "open" else "resolved",
        "rule": incident.kind,
        "rule_id": incident.rule_id,
        "severity": incident.severity,
        "team": incident.team.slug if incident.team_id else None,
        "application": app.name if app else None,
        "cluster": incident.cluster.name if incident.cluster_id else None,
        "summary": summary,
        "url": incident_url(incident),
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
    }
    if fmt == WebhookEndpoint.Format.SLACK:
        mark = ":red_circle:" if event == "open" else ":white_check_mark:"
        word = "Opened" if event == "open" else "Resolved"
        body["text"] = f"{mark} {word}: {summary} <{body['url']}|incident #{incident.pk}>"
    return body


def notify_incident(incident: Incident, event: str) -> int:
    """Queue one delivery per channel and team told (webhooks, each team's admins' mail, staff's); they go out
    after commit, each with its team's view of the incident."""
    incident.notified_state = event
    incident.save(update_fields=["notified_state"])
    rows = [
        Delivery(incident=incident, event=event, channel="webhook", endpoint=e, team_id=e.team_id)
        for e in WebhookEndpoint.objects.filter(team_id__in=teams_told(incident), enabled=True)
    ]
    if incident.rule.email:
        for team_id, recipients in _mail_groups(incident):
            rows.append(
                Delivery(incident=incident, event=event, channel="email", team_id=team_id, recipients=recipients)
            )
    created = Delivery.objects.bulk_create(rows)
    ids = [d.pk for d in created]
    transaction.on_commit(lambda: [enqueue("workers.tasks.alerts.deliver", pk) for pk in ids])
    return len(ids)


def backoff_s(attempts: int) -> float:
    """Exponential backoff with jitter (half to one and a half times), capped."""
    base = settings.WEBHOOK_RETRY_BASE_S * 2 ** max(0, attempts - 1)
    return min(base, settings.WEBHOOK_RETRY_MAX_S) * (0.5 + random.random())


def deliver(delivery_id: int, now: datetime | None = None) -> str:
    """One attempt of one delivery, recorded with its answer; a failure schedules the next (backoff, jitter)."""
    now = now or timezone.now()
    with transaction.atomic():
        d = (
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(pk=delivery_id, state=Delivery.State.PENDING, next_attempt_at__lte=now)
            .first()
        )
        if d is None:
            return "not-due"
        # Claimed: a sweep running meanwhile will not send it again before this attempt's answer.
        Delivery.objects.filter(pk=d.pk).update(next_attempt_at=now + timedelta(seconds=60))
    d = Delivery.objects.select_related("incident__team", "incident__application", "incident__cluster", "endpoint").get(
        pk=delivery_id
    )
    if d.channel == "webhook":
        endpoint = d.endpoint
        if endpoint is None or not endpoint.enabled:
            _finish(d, Delivery.State.FAILED, now)
            DeliveryAttempt.objects.create(delivery=d, answer="endpoint disabled; not sent")
            return "endpoint-disabled"
        attempt = webhooks.send(
            endpoint.url,
            endpoint.secret,
            payload(d.incident, d.event, endpoint.format, d.team_id),
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE,
            timeout=settings.WEBHOOK_TIMEOUT_S,
        )
    else:
        attempt = _send_email(d)
    DeliveryAttempt.objects.create(
        delivery=d,
        at=now,
        status_code=attempt.status_code,
        ok=attempt.ok,
        answer=attempt.answer[:500],
        duration_ms=round(attempt.duration_ms, 2),
    )
    d.attempts += 1
    if attempt.ok:
        _finish(d, Delivery.State.SENT, now)
        if d.endpoint_id:
            WebhookEndpoint.objects.filter(pk=d.endpoint_id).update(consecutive_failures=0)
        return "sent"
    if d.endpoint_id:
        _endpoint_failed(d.endpoint, attempt.answer)
    if d.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        _finish(d, Delivery.State.FAILED, now)
        return "gave-up"
    Delivery.objects.filter(pk=d.pk).update(
        attempts=d.attempts, next_attempt_at=now + timedelta(seconds=backoff_s(d.attempts))
    )
    return "retry"


def _finish(d: Delivery, state: str, now: datetime) -> None:
    Delivery.objects.filter(pk=d.pk).update(state=state, attempts=d.attempts, finished_at=now)


def _endpoint_failed(endpoint: WebhookEndpoint, answer: str) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    endpoint.refresh_from_db(fields=["consecutive_failures", "enabled"])
    if endpoint.enabled and endpoint.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER:
        reason = f"disabled after {endpoint.consecutive_failures} failed attempts in a row; last: {answer[:200]}"
        WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(enabled=False, disabled_reason=reason)
        Delivery.objects.filter(endpoint=endpoint, state=Delivery.State.PENDING).update(
            state=Delivery.State.FAILED, finished_at=timezone.now()
        )
        audit_record(
            actor=None,
            action="webhook.disable",
            obj=endpoint,
            team=endpoint.team,
            after={"url": endpoint.url, "reason": reason},
            source="worker",
            object_repr=f"webhook {endpoint.url}"[:200],
        )


def _send_email(d: Delivery) -> webhooks.Attempt:
    inc = d.incident
    word = "Opened" if d.event == "open" else "Resolved"
    summary = payload(inc, d.event, WebhookEndpoint.Format.JSON, d.team_id)["summary"]
    started = time.perf_counter()
    try:
        send_mail(
            f"[{inc.severity}] {word}: {summary}"[:200],
            f"{summary}\n\nRule: {KINDS[inc.kind].label}\nState: {d.event}\n\n{incident_url(inc)}\n",
            settings.DEFAULT_FROM_EMAIL,
            d.recipients,
        )
    except Exception as exc:  # noqa: BLE001 - any mail failure is an attempt's answer, retried
        return webhooks.Attempt(
            False, None, f"{type(exc).__name__}: {exc}"[:300], (time.perf_counter() - started) * 1000
        )
    return webhooks.Attempt(
        True, None, f"sent to {len(d.recipients)} recipient(s)", (time.perf_counter() - started) * 1000
    )


def due_deliveries(now: datetime | None = None, limit: int = 200) -> list[int]:
    """Pending deliveries whose next attempt is due: the sweep enqueues each (a lost broker message is retried)."""
    now = now or timezone.now()
    return list(
        Delivery.objects.filter(state=Delivery.State.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
