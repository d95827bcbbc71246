"""Conditions and the rules they are judged by: what every kind of condition shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.applications.models import Application

from ..kinds import KINDS, effective_params
from ..models import AlertRule


@dataclass
class Condition:
    kind: str
    key: str
    summary: str
    rule: AlertRule
    team_id: int | None = None
    application_id: int | None = None
    cluster_id: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return KINDS[self.kind].severity


class Rules:
    """Every rule, loaded once, and the one that applies to a subject: application > team (on the cluster, then
    anywhere) > cluster > default."""

    def __init__(self, rules: list[AlertRule]) -> None:
        # An application's rule also names the application's team (so the team's readers see it): keyed by app.
        self.by_scope: dict[tuple, AlertRule] = {
            (r.kind, r.application_id, None, None) if r.application_id else (r.kind, None, r.team_id, r.cluster_id): r
            for r in rules
        }
        self.kinds = {r.kind for r in rules}

    def for_subject(
        self, kind: str, *, application: int | None = None, team: int | None = None, cluster: int | None = None
    ) -> AlertRule | None:
        for scope in (
            (kind, application, None, None) if application else None,
            (kind, None, team, cluster) if team and cluster else None,
            (kind, None, team, None) if team else None,
            (kind, None, None, cluster) if cluster else None,
            (kind, None, None, None),
        ):
            if scope is not None and scope in self.by_scope:
                rule = self.by_scope[scope]
                return rule if rule.enabled else None
        return None

    def params(self, rule: AlertRule) -> dict[str, float]:
        return effective_params(rule.kind, rule.params)


def _app_rule(rules: Rules, kind: str, app: Application) -> AlertRule | None:
    return rules.for_subject(kind, application=app.pk, team=app.team_id, cluster=app.cluster_id)


def _live_apps() -> Any:
    return Application.objects.filter(deleted_at__isnull=True).select_related("team", "cluster")


def _json(value: Any) -> dict:
    """A JSON column read through a subquery: SQLite hands it back as text."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
