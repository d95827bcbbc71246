"""The request principal: who is asking, and with what authority.

One object per request, built from ``request.user`` and ``request.auth`` (the API token, when one was sent), that
every selector and permission check takes. Authority is decided here and nowhere else:

- a signed-in user reads the teams they belong to, with their role in each;
- staff read and manage everything and count as owners of every team, but only through a session or an
  *unscoped* token: a staff user's team-scoped token is not staff;
- a team-scoped token sees its team only, with at most the token's role there (and never more than the user's
  own role, which is read afresh on every request: a demoted user's token is demoted with them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from .models import ApiToken, Membership, Role, Team, role_at_least


@dataclass
class Principal:
    user: Any  # a User, or None for anonymous requests
    token: ApiToken | None = None
    system: bool = False  # the control plane acting for the user (single sign-on's group mapping): owner everywhere
    _memberships: dict[int, str] | None = field(default=None, repr=False)

    # ---- who -----------------------------------------------------------------------------------------------------

    @property
    def is_authenticated(self) -> bool:
        return bool(self.user is not None and getattr(self.user, "is_authenticated", False) and self.user.is_active)

    @property
    def scope_team_id(self) -> int | None:
        return self.token.team_id if self.token is not None and self.token.team_id else None

    @property
    def scope_role(self) -> str | None:
        return (self.token.role or Role.MEMBER) if self.scope_team_id is not None else None

    @property
    def is_scoped(self) -> bool:
        return self.scope_team_id is not None

    @property
    def is_staff(self) -> bool:
        """Staff powers: a staff user through a session or an unscoped token only."""
        return self.is_authenticated and bool(self.user.is_staff) and not self.is_scoped

    def __str__(self) -> str:
        if not self.is_authenticated:
            return "anonymous"
        who = self.user.get_username()
        return f"{who} (token {self.token.prefix}, scoped)" if self.is_scoped and self.token else who

    # ---- roles ---------------------------------------------------------------------------------------------------

    def _own_roles(self) -> dict[int, str]:
        """The user's memberships (team id -> role), read once per request."""
        if self._memberships is None:
            if not self.is_authenticated:
                self._memberships = {}
            else:
                self._memberships = dict(Membership.objects.filter(user=self.user).values_list("team_id", "role"))
        return self._memberships

    def role_id(self, team_id: int) -> str | None:
        """The principal's role in a team (by id): staff count as owners; a scoped token caps the user's role."""
        if not self.is_authenticated:
            return None
        if self.is_staff or self.system:
            return Role.OWNER
        if self.is_scoped and team_id != self.scope_team_id:
            return None
        role = self._own_roles().get(team_id)
        if role and self.is_scoped and role_at_least(role, self.scope_role or Role.VIEWER):
            role = self.scope_role
        return role

    def role(self, team: Team) -> str | None:
        return self.role_id(team.pk)

    def member_role(self, team_id: int) -> str | None:
        """The role the user holds as a member of the team (None: not a member, whatever staff may do there)."""
        return self._own_roles().get(team_id) if self.is_authenticated else None

    def roles(self, teams: Iterable[Team]) -> dict[int, str | None]:
        return {t.pk: self.role_id(t.pk) for t in teams}

    def can(self, team: Team, needed: str) -> bool:
        return role_at_least(self.role(team), needed)

    def team_ids(self, needed: str = Role.VIEWER) -> list[int]:
        """Ids of the teams where the principal has at least ``needed`` (not for staff: they see every team)."""
        if not self.is_authenticated:
            return []
        ids = [self.scope_team_id] if self.is_scoped else list(self._own_roles())
        return [i for i in ids if i is not None and role_at_least(self.role_id(i), needed)]

    # ---- visibility ----------------------------------------------------------------------------------------------

    def teams(self, needed: str = Role.VIEWER) -> QuerySet[Team]:
        """Teams the principal may read (or hold ``needed`` in)."""
        if self.is_staff:
            return Team.objects.all()
        return Team.objects.filter(pk__in=self.team_ids(needed))

    def restrict(self, qs: QuerySet, team_field: str = "team", needed: str = Role.VIEWER) -> QuerySet:
        """The rows of ``qs`` whose team (reached through ``team_field``) the principal may read: NetBox's
        ``restrict()``. Staff get every row; anonymous principals none."""
        if self.is_staff:
            return qs
        if not self.is_authenticated:
            return qs.none()
        return qs.filter(**{f"{team_field}__in": self.team_ids(needed)})

    def restrict_or_shared(self, qs: QuerySet, team_field: str = "team") -> QuerySet:
        """Like ``restrict``, plus the rows without a team (shared defaults)."""
        if self.is_staff:
            return qs
        return qs.filter(Q(**{f"{team_field}__isnull": True}) | Q(**{f"{team_field}__in": self.team_ids()}))


ANONYMOUS = Principal(user=None)


def as_principal(actor: Any) -> Principal:
    """A principal for code that acts for a user outside a request (management commands, sign-in, tests)."""
    if isinstance(actor, Principal):
        return actor
    return Principal(user=actor)


def principal_of(request: Any) -> Principal:
    """The request's principal, built once from its user and its token (``request.auth``, set by DRF)."""
    user = getattr(request, "user", None)
    auth = getattr(request, "auth", None)
    token = auth if isinstance(auth, ApiToken) else None
    raw = getattr(request, "_request", request)  # DRF wraps Django's request; cache on the one both share
    cached = getattr(raw, "_principal", None)
    if cached is not None and cached.user is user and cached.token is token:
        return cached
    principal = Principal(user=user if user is not None and user.is_authenticated else None, token=token)
    raw._principal = principal
    return principal
