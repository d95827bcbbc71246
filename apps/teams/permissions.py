"""DRF's side of the principal: permission classes and the team-scoped viewset base every team resource uses.

A new endpoint that extends ``TeamScopedViewSet`` is scoped by default: its queryset is restricted to the teams
the principal may read before any lookup, so another team's object is a 404, never a 403 that names it.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import permissions, viewsets
from rest_framework.exceptions import PermissionDenied

from .models import Role, Team
from .principal import Principal, principal_of

READ_METHODS = ("GET", "HEAD", "OPTIONS")


class IsStaff(permissions.BasePermission):
    """Staff only (a staff user's team-scoped token is not staff)."""

    message = "Only platform staff may do this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return principal_of(request).is_staff


class StaffWritesOnly(permissions.BasePermission):
    """Any signed-in principal reads; only staff write."""

    message = "Only platform staff may change this."

    def has_permission(self, request: Any, view: Any) -> bool:
        principal = principal_of(request)
        if not principal.is_authenticated:
            return False
        return request.method in READ_METHODS or principal.is_staff

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return self.has_permission(request, view)


class PrincipalMixin:
    """``self.principal`` for API views, and the one way they demand a role."""

    request: Any

    @property
    def principal(self) -> Principal:
        return principal_of(self.request)

    def require_role(self, team: Team, needed: str, what: str) -> None:
        require(self.principal, team, needed, what)


def require(principal: Principal, team: Team, needed: str, what: str) -> None:
    if not principal.can(team, needed):
        raise PermissionDenied(f"You need the {needed} role in team {team.slug} to {what}.")


class TeamScopedViewSet(PrincipalMixin, viewsets.GenericViewSet):
    """A viewset over rows that belong to a team: ``get_queryset`` is ``base_queryset()`` restricted to the teams
    the principal may read (staff: all). ``team_field`` is the path from the row to its team."""

    team_field = "team"
    read_role = Role.VIEWER
    model: Any = None

    def base_queryset(self) -> QuerySet:
        return self.model.objects.all()

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return self.model.objects.none()
        return self.principal.restrict(self.base_queryset(), self.team_field, self.read_role)

    def check_permissions(self, request: Any) -> None:
        """An object the principal may not see is not found, before any permission says what it may not do to it
        (a 403 would confirm that another team's object exists)."""
        lookup = self.lookup_url_kwarg or self.lookup_field
        if lookup in self.kwargs and self.principal.is_authenticated:
            self.get_object()
        super().check_permissions(request)
