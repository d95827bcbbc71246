"""Incidents from conditions (open, update, resolve, quiet period), notifications and their delivery, rules and
webhook endpoints as users change them."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from rest_framework.exceptions import PermissionDenied, ValidationError

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.core.jobs import enqueue
from apps.core.links import public_url
from apps.teams.models import Team
from apps.teams.selectors import admin_emails
from workers.clients import webhooks

from .conditions import EVALUATORS, Condition, Rules
from .kinds import KINDS, validate_params
from .models import AlertRule, Delivery, DeliveryAttempt, Incident, WebhookEndpoint

log = logging.getLogger(__name__)


@dataclass
class Pass:
    conditions: int = 0
    opened: int = 0
    reopened: int = 0
    updated: int = 0
    resolved: int = 0
    notifications: int = 0
    seconds: float = 0.0


# ---- evaluation --------------------------------------------------------------------------------------------------


def evaluate(now: datetime | None = None) -> Pass:
    """One pass over every rule: conditions now, then incidents opened, updated or resolved to match."""
    started = time.perf_counter()
    now = now or timezone.now()
    rules = Rules(list(AlertRule.objects.select_related(None)))
    found: dict[str, Condition] = {}
    for kind, evaluator in EVALUATORS.items():
        if kind in rules.kinds:
            for c in evaluator(rules, now):
                found[c.key] = c
    result = Pass(conditions=len(found))
    open_now = {i.key: i for i in Incident.objects.filter(state=Incident.State.OPEN).select_related("rule")}
    fresh = [k for k in found if k not in open_now]
    latest_resolved: dict[str, Incident] = {}
    for inc in Incident.objects.filter(state=Incident.State.RESOLVED, key__in=fresh).order_by("key", "-resolved_at"):
        latest_resolved.setdefault(inc.key, inc)
    notify: list[tuple[Incident, str]] = []
    changed: list[Incident] = []
    gone: list[Incident] = []
    with transaction.atomic():
        for key in fresh:
            c = found[key]
            prev = latest_resolved.get(key)
            if prev is not None and prev.quiet_until and prev.quiet_until > now:
                # Back within the quiet period: the same incident again, without a second "opened".
                _apply(prev, c, now)
                prev.state, prev.resolved_at = Incident.State.OPEN, None
                prev.reopened += 1
                prev.save()
                result.reopened += 1
                continue
            inc = Incident(
                rule=c.rule,
                kind=c.kind,
                key=key,
                team_id=c.team_id,
                application_id=c.application_id,
                cluster_id=c.cluster_id,
                severity=c.severity,
                opened_at=now,
            )
            _apply(inc, c, now)
            inc.save()
            result.opened += 1
            notify.append((inc, "open"))
        for key, inc in open_now.items():
            c = found.get(key)
            if c is not None:
                if (inc.summary, inc.evidence, inc.rule_id) != (c.summary[:300], c.evidence, c.rule.pk):
                    _apply(inc, c, now)
                    changed.append(inc)
                if inc.notified_state != "open" and (inc.quiet_until is None or inc.quiet_until <= now):
                    notify.append((inc, "open"))  # it came back silently and outlasted the quiet period
                continue
            inc.state, inc.resolved_at, inc.updated_at = Incident.State.RESOLVED, now, now
            inc.quiet_until = now + timedelta(seconds=inc.rule.quiet_period_s)
            gone.append(inc)
            if inc.notified_state == "open":
                notify.append((inc, "resolved"))
        # Written in batches: a pass costs a fixed number of queries however many incidents last or end.
        Incident.objects.bulk_update(changed, ["summary", "evidence", "rule", "updated_at"], batch_size=500)
        Incident.objects.bulk_update(gone, ["state", "resolved_at", "updated_at", "quiet_until"], batch_size=500)
        result.updated, result.resolved = len(changed), len(gone)
        for inc, event in notify:
            result.notifications += notify_incident(inc, event)
    result.seconds = time.perf_counter() - started
    return result


def _apply(inc: Incident, c: Condition, now: datetime) -> None:
    inc.summary = c.summary[:300]
    inc.evidence = c.evidence
    inc.rule = c.rule
    inc.updated_at = now


# ---- notification ------------------------------------------------------------------------------------------------


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
    team_ids = teams_told(incident)
    emails = set(admin_emails(team_ids))
    if KINDS[incident.kind].staff_only or not team_ids:
        emails |= set(
            get_user_model()
            .objects.filter(is_staff=True, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
    return sorted(emails)


def payload(incident: Incident, event: str, fmt: str) -> dict[str, Any]:
    app = incident.application
    body: dict[str, Any] = {
        "incident": incident.pk,
        "state": "open" if event == "open" else "resolved",
        "rule": incident.kind,
        "rule_id": incident.rule_id,
        "severity": incident.severity,
        "team": incident.team.slug if incident.team_id else None,
        "application": app.name if app else None,
        "cluster": incident.cluster.name if incident.cluster_id else None,
        "summary": incident.summary,
        "url": incident_url(incident),
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
    }
    if fmt == WebhookEndpoint.Format.SLACK:
        mark = ":red_circle:" if event == "open" else ":white_check_mark:"
        word = "Opened" if event == "open" else "Resolved"
        body["text"] = f"{mark} {word}: {incident.summary} <{body['url']}|incident #{incident.pk}>"
    return body


def notify_incident(incident: Incident, event: str) -> int:
    """Queue one delivery per channel (webhooks of the teams told, email); they go out after commit."""
    incident.notified_state = event
    incident.save(update_fields=["notified_state"])
    rows = [
        Delivery(incident=incident, event=event, channel="webhook", endpoint=e)
        for e in WebhookEndpoint.objects.filter(team_id__in=teams_told(incident), enabled=True)
    ]
    if incident.rule.email:
        recipients = email_recipients(incident)
        if recipients:
            rows.append(Delivery(incident=incident, event=event, channel="email", recipients=recipients))
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
            payload(d.incident, d.event, endpoint.format),
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
    started = time.perf_counter()
    try:
        send_mail(
            f"[{inc.severity}] {word}: {inc.summary}"[:200],
            f"{inc.summary}\n\nRule: {KINDS[inc.kind].label}\nState: {d.event}\n\n{incident_url(inc)}\n",
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


# ---- acknowledging -----------------------------------------------------------------------------------------------


def acknowledge(*, actor: Any, incident: Incident) -> Incident:
    if incident.acknowledged_at is None:
        incident.acknowledged_by = actor
        incident.acknowledged_at = timezone.now()
        incident.save(update_fields=["acknowledged_by", "acknowledged_at"])
        audit_record(
            actor=actor,
            action="incident.acknowledge",
            obj=incident,
            team=incident.team,
            after={"incident": incident.pk, "summary": incident.summary},
            object_repr=f"incident #{incident.pk}",
        )
    return incident


# ---- rules -------------------------------------------------------------------------------------------------------


def ensure_default_rules() -> int:
    """One default rule per kind (no scope): every team gets them; staff tune them."""
    have = set(AlertRule.objects.filter(team=None, application=None, cluster=None).values_list("kind", flat=True))
    missing = [AlertRule(kind=k) for k in KINDS if k not in have]
    AlertRule.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)


RULE_FIELDS = ("enabled", "params", "quiet_period_s", "email")


def rule_save(
    *,
    actor: Any,
    data: dict[str, Any],
    rule: AlertRule | None = None,
    can_admin_team: Any,
) -> AlertRule:
    """Create (rule None) or change a rule. Staff set defaults and cluster rules; team admins their team's and
    their applications'. Errors name the field."""
    errors: dict[str, list[str]] = {}
    if rule is None:
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValidationError({"kind": [f"Required: one of {', '.join(KINDS)}."]})
        team = application = cluster = None
        app_id, team_ref, cluster_id = data.get("application"), data.get("team"), data.get("cluster")
        if app_id is not None:
            application = Application.objects.filter(pk=app_id, deleted_at__isnull=True).select_related("team").first()
            if application is None:
                errors["application"] = ["No such application."]
            else:
                team = application.team
        elif team_ref is not None:
            team = Team.objects.filter(Q(slug=team_ref) if isinstance(team_ref, str) else Q(pk=team_ref)).first()
            if team is None:
                errors["team"] = ["No such team."]
        if cluster_id is not None and application is None:
            cluster = Cluster.objects.filter(pk=cluster_id).first() if isinstance(cluster_id, int) else None
            if cluster is None:
                errors["cluster"] = ["No such cluster."]
        if errors:
            raise ValidationError(errors)
        if team is None and not getattr(actor, "is_staff", False):
            raise PermissionDenied("Only staff set default and cluster-wide rules; give a team or an application.")
        if team is not None and not can_admin_team(team):
            raise PermissionDenied(f"You need the admin role in team {team.slug} to set its alert rules.")
        if KINDS[kind].staff_only and not getattr(actor, "is_staff", False):
            raise PermissionDenied(f"{kind} rules watch clusters: staff set them (teams hear them).")
        rule = AlertRule(kind=kind, team=team, application=application, cluster=cluster, created_by=actor)
        if AlertRule.objects.filter(kind=kind, team=team, application=application, cluster=cluster).exists():
            raise ValidationError({"kind": [f"A {kind} rule for {rule.scope_label} exists; change that one."]})
        before = None
    else:
        before = _rule_summary(rule)
        for forbidden in ("kind", "team", "application", "cluster"):
            if forbidden in data and data[forbidden] != getattr(
                rule, f"{forbidden}_id" if forbidden != "kind" else "kind"
            ):
                errors[forbidden] = ["Cannot be changed; make a new rule for another scope."]
    if "params" in data:
        clean, param_errors = validate_params(rule.kind, data["params"])
        errors.update(param_errors)
        rule.params = clean
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            errors["enabled"] = ["Must be true or false."]
        else:
            rule.enabled = data["enabled"]
    if "email" in data:
        if not isinstance(data["email"], bool):
            errors["email"] = ["Must be true or false."]
        else:
            rule.email = data["email"]
    if "quiet_period_s" in data:
        q = data["quiet_period_s"]
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= 7 * 86400:
            errors["quiet_period_s"] = ["Must be a whole number of seconds between 0 and 604800."]
        else:
            rule.quiet_period_s = q
    if errors:
        raise ValidationError(errors)
    rule.updated_at = timezone.now()
    rule.save()
    audit_record(
        actor=actor,
        action="alert_rule.create" if before is None else "alert_rule.update",
        obj=rule,
        team=rule.team,
        before=before,
        after=_rule_summary(rule),
        object_repr=str(rule)[:200],
    )
    return rule


def rule_delete(*, actor: Any, rule: AlertRule) -> None:
    if rule.team_id is None and rule.application_id is None and rule.cluster_id is None:
        raise ValidationError({"detail": "A default rule cannot be deleted; disable it instead."})
    before = _rule_summary(rule)
    team = rule.team
    audit_record(
        actor=actor, action="alert_rule.delete", obj=rule, team=team, before=before, object_repr=str(rule)[:200]
    )
    rule.delete()


def _rule_summary(rule: AlertRule) -> dict[str, Any]:
    return {
        "kind": rule.kind,
        "scope": rule.scope_label,
        "enabled": rule.enabled,
        "params": rule.params,
        "quiet_period_s": rule.quiet_period_s,
        "email": rule.email,
    }


# ---- webhook endpoints -------------------------------------------------------------------------------------------


def webhook_create(*, actor: Any, team: Team, data: dict[str, Any]) -> WebhookEndpoint:
    errors: dict[str, list[str]] = {}
    url = data.get("url")
    secret = data.get("secret")
    fmt = data.get("format", WebhookEndpoint.Format.JSON)
    if not isinstance(url, str) or not url.strip():
        errors["url"] = ["Required: the http(s) URL that receives the signed requests."]
    elif len(url) > 500:
        errors["url"] = ["At most 500 characters."]
    else:
        try:
            webhooks.check_url(url.strip(), allow_private=settings.WEBHOOK_ALLOW_PRIVATE)
        except webhooks.UnsafeURL as exc:
            errors["url"] = [f"Refused: the URL {exc}."]
    if not isinstance(secret, str) or len(secret) < 16:
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
