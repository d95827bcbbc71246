"""A verified ID token becomes a signed-in user: found by (issuer, sub), created on first sign-in, and given the
teams, roles and staff flag that the configured group mapping says, again at every sign-in."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.core.errors import error_text
from apps.core.roles import ROLE_RANK
from apps.teams import services as team_services
from apps.teams.models import Membership, Team
from apps.teams.principal import Principal

from .config import group_rules
from .models import SsoIdentity

logger = logging.getLogger(__name__)

USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class SignInRefused(Exception):
    """A verified token that still cannot sign anyone in; the message says why."""


def group_name(group: Any) -> str:
    """Keycloak sends group paths (``/ml-platform``, ``/org/ml``); others bare names: compare without the first /."""
    return str(group).strip().removeprefix("/")


def groups_of(claims: dict[str, Any]) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({group_name(g) for g in value if isinstance(g, str | int)})


def email_verified(claims: dict[str, Any]) -> bool:
    """True, or the string "true" (as AWS Cognito and some others send it)."""
    value = claims.get("email_verified")
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


@transaction.atomic
def sign_in(*, issuer: str, claims: dict[str, Any]) -> tuple[Any, list[str], bool]:
    """The user for these verified claims, what changed in their teams (lines for the welcome message), and whether
    this was their first sign-in here."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise SignInRefused("The ID token names no subject (sub).")
    email = str(claims.get("email") or "").strip().lower()
    groups = groups_of(claims)
    identity = SsoIdentity.objects.select_for_update().filter(issuer=issuer, subject=subject).first()
    User = get_user_model()  # noqa: N806
    first = identity is None
    if identity is None:
        user = _link_or_create(User, claims, email)
        if SsoIdentity.objects.filter(user=user, issuer=issuer).exists():
            raise SignInRefused(
                f"The account with {email} is already linked to another person at this provider; ask a platform admin."
            )
        identity = SsoIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        audit_record(
            actor=user, action="user.sso_link", obj=user, after={"issuer": issuer, "subject": subject}, source="sso"
        )
    user = identity.user
    if not user.is_active:
        raise SignInRefused("This account is deactivated; ask a platform admin.")
    if email and user.email != email and not User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
        user.email = email
        user.save(update_fields=["email"])
    changes = _apply_groups(user, identity, groups)
    identity.email, identity.groups, identity.last_login_at = email, groups, timezone.now()
    identity.save(update_fields=["email", "groups", "last_login_at", "managed_team_ids"])
    return user, changes, first


def _link_or_create(User: Any, claims: dict[str, Any], email: str) -> Any:  # noqa: N803
    """The account a first sign-in opens. An existing account with the address is linked only when both sides
    proved the address (the provider verified it; its owner here opened a link sent to it, or accepted an
    invitation there), and never a platform admin's account. An address typed at sign-up and never proven is only
    a claim: the person the provider vouches for gets an account of their own, and the claim is released."""
    existing = User.objects.filter(email__iexact=email).first() if email else None
    if existing is not None:
        if not email_verified(claims):
            raise SignInRefused(
                f"An account with {email} already exists and the provider has not verified that address, "
                "so it cannot be linked; ask a platform admin."
            )
        if existing.is_staff or existing.is_superuser:
            raise SignInRefused(
                f"A platform admin account uses {email}; it is never opened by a sign-in at the provider. "
                "Ask a platform admin to link it."
            )
        if team_services.email_is_verified(existing):
            return existing
        existing.email = ""  # an unproven claim to the address gives way to the person the provider vouches for
        existing.save(update_fields=["email"])
        audit_record(
            actor=None,
            action="user.email_released",
            obj=existing,
            before={"email": email},
            after={"reason": "never verified; the provider verified it for another person"},
            source="sso",
        )
    base = USERNAME_UNSAFE.sub("-", str(claims.get("preferred_username") or email.split("@")[0] or claims["sub"]))
    base = base.strip("-")[:140] or "user"
    username, n = base, 1
    while User.objects.filter(username__iexact=username).exists():
        n += 1
        username = f"{base}-{n}"
    user = User.objects.create_user(username=username, email=email)  # no password: they sign in at the provider
    if email and email_verified(claims):
        team_services.email_mark_verified(user=user, how="sso", source="sso")
    user.first_name = str(claims.get("given_name") or claims.get("name") or "")[:150]
    user.save(update_fields=["first_name"])
    audit_record(actor=user, action="user.signup", obj=user, after={"username": username, "via": "sso"}, source="sso")
    return user


def _mapping(user: Any) -> Principal:
    """The group mapping acts with the control plane's authority (set by staff in OIDC_GROUP_TEAMS), for the user."""
    return Principal(user=user, system=True)


def _apply_groups(user: Any, identity: SsoIdentity, groups: list[str]) -> list[str]:
    """Memberships the mapping made follow the groups; memberships made by hand (or invitation) are left alone."""
    changes: list[str] = []
    wanted: dict[str, str] = {}
    for rule in group_rules():
        if group_name(rule.group) in groups and ROLE_RANK[rule.role] > ROLE_RANK.get(wanted.get(rule.team, ""), 0):
            wanted[rule.team] = rule.role
    teams = {t.slug: t for t in Team.objects.filter(slug__in=wanted)}
    for slug in sorted(set(wanted) - set(teams)):
        logger.warning("OIDC_GROUP_TEAMS maps a group to team %s, which does not exist", slug)
    managed = set(identity.managed_team_ids)
    memberships = {m.team_id: m for m in Membership.objects.filter(user=user).select_related("team")}
    for slug, role in sorted(wanted.items()):
        team = teams.get(slug)
        if team is None:
            continue
        m = memberships.get(team.pk)
        if m is None:
            m = Membership.objects.create(team=team, user=user, role=role)
            managed.add(team.pk)
            audit_record(
                actor=user,
                team=team,
                action="membership.add",
                obj=m,
                after={"user": user.username, "role": role, "via": "sso group"},
                source="sso",
            )
            changes.append(f"joined {slug} as {role}")
        elif team.pk in managed and m.role != role:
            try:
                team_services.membership_change(actor=_mapping(user), membership=m, role=role, source="sso")
                changes.append(f"now {role} in {slug}")
            except ValidationError as exc:
                logger.warning("SSO group mapping left %s's role in %s: %s", user.username, slug, error_text(exc))
    for team_id in sorted(managed - {teams[s].pk for s in wanted if s in teams}):
        m = memberships.get(team_id)
        if m is None:
            managed.discard(team_id)
            continue
        try:
            team_services.membership_remove(actor=_mapping(user), membership=m, source="sso")
            managed.discard(team_id)
            changes.append(f"left {m.team.slug} (no longer in its group)")
        except ValidationError as exc:  # the last owner stays until another is named
            logger.warning("SSO group mapping kept %s in %s: %s", user.username, m.team.slug, error_text(exc))
    identity.managed_team_ids = sorted(managed)
    if settings.OIDC_STAFF_GROUP and not user.is_superuser:  # a local superuser keeps the admin
        staff = group_name(settings.OIDC_STAFF_GROUP) in groups
        if user.is_staff != staff:
            user.is_staff = staff
            user.save(update_fields=["is_staff"])
            audit_record(
                actor=user,
                action="user.staff",
                obj=user,
                before={"is_staff": not staff},
                after={"is_staff": staff, "via": "sso group"},
                source="sso",
            )
            changes.append("platform staff" if staff else "no longer platform staff")
    return changes
