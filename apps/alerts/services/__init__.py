"""Incidents from conditions (open, update, resolve, quiet period), notifications and their delivery, rules and
webhook endpoints as users change them.

The services by subject: evaluation, notification, acknowledgement, rules, endpoints."""

from __future__ import annotations

from .acknowledgement import acknowledge
from .endpoints import webhook_create, webhook_delete, webhook_enable
from .evaluation import Pass, evaluate
from .notification import (
    _send_email,
    backoff_s,
    deliver,
    due_deliveries,
    email_recipients,
    incident_url,
    notify_incident,
    payload,
    teams_told,
)
from .rules import RULE_FIELDS, ensure_default_rules, rule_create, rule_delete, rule_update

__all__ = [
    "Pass",
    "RULE_FIELDS",
    "_send_email",
    "acknowledge",
    "backoff_s",
    "deliver",
    "due_deliveries",
    "email_recipients",
    "ensure_default_rules",
    "evaluate",
    "incident_url",
    "notify_incident",
    "payload",
    "rule_delete",
    "rule_create",
    "rule_update",
    "teams_told",
    "webhook_create",
    "webhook_delete",
    "webhook_enable",
]
