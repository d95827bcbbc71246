"""Alert rules as people change them: defaults, team and application overrides (admins), cluster rules (staff)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.teams.models import Role
from apps.teams.principal import as_principal

from ..kinds import KINDS, validate_params
from ..models import AlertRule

log = logging.getLogger(__name__)


QUIET_BY_DEFAULT = ("admission_refused",)  # kinds whose default rule shows incidents without mailing them


def ensure_default_rules() -> int:
    """One default rule per kind (no scope): every team gets them; staff tune them. A refused write was answered
    on its form already: its incident is shown, not mailed, unless staff turn mail on."""
    have = set(AlertRule.objects.filter(team=None, application=None, cluster=None).values_list("kind", flat=True))
    missing = [AlertRule(kind=k, email=k not in QUIET_BY_DEFAULT) for k in KINDS if k not in have]
    AlertRule.objects.bulk_create(missing, ignore_conflicts=True)
    return len(missing)


RULE_FIELDS = ("enabled", "params", "quiet_period_s", "email")
QUIET_MAX_S = 7 * 86400


def rule_create(
    *,
    actor: Any,
    kind: str,
    team: str | int | None = None,
    application: int | None = None,
    cluster: int | None = None,
    enabled: bool | None = None,
    params: dict[str, Any] | None = None,
    quiet_period_s: int | None = None,
    email: bool | None = None,
) -> AlertRule:
    """A new rule. Staff set defaults and cluster rules; team admins their team's (``team``: its slug or id) and
    their applications'. Another team's application or team is "no such" one; errors name the field."""
    principal = as_principal(actor)
    if kind not in KINDS:
        raise ValidationError({"kind": [f"Required: one of {', '.join(KINDS)}."]})
    errors: dict[str, list[str]] = {}
    found_team = found_app = found_cluster = None
    if application is not None:
        apps = principal.restrict(Application.objects.filter(deleted_at__isnull=True))
        found_app = apps.filter(pk=application).select_related("team").first()
        if found_app is None:
            errors["application"] = ["No such application among your teams'."]
        else:
            found_team = found_app.team
    elif team is not None:
        found_team = principal.teams().filter(Q(slug=team) if isinstance(team, str) else Q(pk=team)).first()
        if found_team is None:
            errors["team"] = ["No such team among yours."]
    if cluster is not None and found_app is None:
        found_cluster = Cluster.objects.filter(pk=cluster).first()
        if found_cluster is None:
            errors["cluster"] = ["No such cluster."]
    if errors:
        raise ValidationError(errors)
    if found_team is None and not principal.is_staff:
        raise PermissionDenied("Only staff set default and cluster-wide rules; give a team or an application.")
    if found_team is not None and not principal.can(found_team, Role.ADMIN):
        raise PermissionDenied(f"You need the admin role in team {found_team.slug} to set its alert rules.")
    if KINDS[kind].staff_only and not principal.is_staff:
        raise PermissionDenied(f"{kind} rules watch clusters: staff set them (teams hear them).")
    scope = {"kind": kind, "team": found_team, "application": found_app, "cluster": found_cluster}
    rule = AlertRule(**scope, created_by=principal.user)
    if AlertRule.objects.filter(**scope).exists():
        raise ValidationError({"kind": [f"A {kind} rule for {rule.scope_label} exists; change that one."]})
    return _save(actor, rule, None, enabled=enabled, params=params, quiet_period_s=quiet_period_s, email=email)


def rule_update(
    *,
    actor: Any,
    rule: AlertRule,
    enabled: bool | None = None,
    params: dict[str, Any] | None = None,
    quiet_period_s: int | None = None,
    email: bool | None = None,
) -> AlertRule:
    """Tune a rule (its scope and kind stay: another scope is another rule). None leaves a setting as it is."""
    before = _rule_summary(rule)
    return _save(actor, rule, before, enabled=enabled, params=params, quiet_period_s=quiet_period_s, email=email)


def _save(
    actor: Any,
    rule: AlertRule,
    before: dict[str, Any] | None,
    *,
    enabled: bool | None,
    params: dict[str, Any] | None,
    quiet_period_s: int | None,
    email: bool | None,
) -> AlertRule:
    errors: dict[str, list[str]] = {}
    if params is not None:
        clean, param_errors = validate_params(rule.kind, params)
        errors.update(param_errors)
        rule.params = clean
    if quiet_period_s is not None:
        if not 0 <= quiet_period_s <= QUIET_MAX_S:
            errors["quiet_period_s"] = [f"Must be a whole number of seconds between 0 and {QUIET_MAX_S}."]
        rule.quiet_period_s = quiet_period_s
    if enabled is not None:
        rule.enabled = enabled
    if email is not None:
        rule.email = email
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
