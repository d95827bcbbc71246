"""Single sign-on settings, read from the environment by ``controlplane.settings`` and checked here."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from apps.core.roles import Role


@dataclass(frozen=True)
class GroupRule:
    group: str
    team: str
    role: str


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def parse_group_teams(text: str) -> list[GroupRule]:
    """``group=team:role,group2=team2:role2`` (role defaults to member). Raises ValueError naming the bad entry."""
    rules = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        group, sep, target = entry.partition("=")
        team, _, role = target.partition(":")
        group, team, role = group.strip(), team.strip(), (role.strip() or Role.MEMBER)
        if not sep or not group or not team:
            raise ValueError(f"OIDC_GROUP_TEAMS: {entry!r} is not group=team[:role]")
        if role not in Role.values:
            raise ValueError(f"OIDC_GROUP_TEAMS: {entry!r}: role must be one of {', '.join(Role.values)}")
        rules.append(GroupRule(group, team, role))
    return rules


def group_rules() -> list[GroupRule]:
    return parse_group_teams(settings.OIDC_GROUP_TEAMS)


def password_signup_open() -> bool:
    return bool(settings.PASSWORD_SIGNUP)
