"""Evaluation: conditions now, then incidents opened, updated or resolved to match (and their notifications)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ..conditions import EVALUATORS, Condition, Rules
from ..models import AlertRule, Incident
from .notification import notify_incident

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
