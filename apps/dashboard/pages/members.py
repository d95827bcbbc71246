"""Teams and their people: creating one, members, invitations, join requests, deleting one."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from apps.core.errors import error_fields, error_text
from apps.sso.models import SsoIdentity
from apps.teams import services as team_services
from apps.teams.models import Invitation, JoinRequest, Membership, Role, Team
from apps.teams.principal import principal_of

from ..accounts import SignUpForm, create_account
from ..forms import (
    JoinRequestForm,
    PeopleForm,
    TeamForm,
    form_errors,
)
from .common import team_or_404


def _free_slug(name: str) -> str:
    """A slug from the display name when none was typed: ``Dana's ML team`` -> ``danas-ml-team`` (or ``-2`` ...)."""
    base = re.sub(r"[-_]+", "-", slugify(name)).strip("-")[:27].strip("-")
    if not base:
        return ""  # the service names the missing slug
    taken = set(Team.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    return next(s for s in (base, *(f"{base}-{n}" for n in range(2, 1000))) if s not in taken)


@login_required
def team_create(request: HttpRequest) -> HttpResponse:
    errors: dict[str, list[str]] = {}
    form = TeamForm(request.POST or None)
    values = {"slug": request.POST.get("slug", ""), "name": request.POST.get("name", "")}
    if request.method == "POST" and form.is_valid():
        try:
            slug, name = form.cleaned_data["slug"].strip(), form.cleaned_data["name"]
            team = team_services.team_create(actor=request.user, slug=slug or _free_slug(name), name=name, source="ui")
            messages.success(request, f"Team {team.slug} created; you are its owner.")
            nxt = request.POST.get("next", "")
            if nxt.startswith("/") and not nxt.startswith("//"):
                return redirect(nxt)
            return redirect("dashboard:team_detail", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
    return render(
        request,
        "teams/team_form.html",
        {"values": values, "errors": errors, "next": request.GET.get("next", "")},
        status=400 if errors else 200,
    )


def _members_page(request: HttpRequest, team: Team, errors: dict[str, list[str]] | None = None) -> HttpResponse:
    principal = principal_of(request)
    is_admin = principal.can(team, Role.ADMIN)
    is_owner = principal.can(team, Role.OWNER)
    return render(
        request,
        "teams/members.html",
        {
            "team": team,
            "members": team.memberships.select_related("user").order_by("user__username"),
            "from_groups": {
                user_id
                for user_id, teams in SsoIdentity.objects.filter(user__memberships__team=team).values_list(
                    "user_id", "managed_team_ids"
                )
                if team.pk in teams
            },
            "is_admin": is_admin,
            # only an owner grants, changes or removes the owner role
            "roles": Role.choices if is_owner else [c for c in Role.choices if c[0] != Role.OWNER],
            "errors": errors or {},
            "role": principal.role(team),
            "is_owner": is_owner,
            "invitations": team.invitations.select_related("created_by", "accepted_by")[:50] if is_admin else [],
            "join_requests": team.join_requests.filter(state="pending").select_related("user") if is_admin else [],
        },
        status=400 if errors else 200,
    )


@login_required
def members(request: HttpRequest, slug: str) -> HttpResponse:
    """The team's people; each change is its own POST below (admins only)."""
    return _members_page(request, team_or_404(request, slug))


def _people_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A POST that changes a team's people: for its admins only (anyone else gets the 404 of a page they are not
    shown); what the service refuses is shown on the members page, with the reason, and nothing changes."""

    @login_required
    @require_POST
    @wraps(view)
    def action(request: HttpRequest, slug: str, **kwargs: Any) -> HttpResponse:
        team = team_or_404(request, slug, Role.ADMIN)
        try:
            view(request, team, **kwargs)
        except ValidationError as exc:
            return _members_page(request, team, error_fields(exc))
        except PermissionDenied as exc:
            reason = error_text(exc)
            messages.error(request, reason)
            return _members_page(request, team, {"role": [reason]})
        return redirect("dashboard:team_members", slug=team.slug)

    return action


def _form(request: HttpRequest) -> dict[str, str]:
    form = PeopleForm(request.POST)
    form.is_valid()  # text fields only: the service judges them and names what is wrong
    return {k: (v or "").strip() for k, v in form.cleaned_data.items()}


@_people_action
def member_add(request: HttpRequest, team: Team) -> None:
    data = _form(request)
    m = team_services.membership_add(
        actor=principal_of(request), team=team, username=data["username"], role=data["role"], source="ui"
    )
    messages.success(request, f"{m.user.username} added as {m.role}.")


@_people_action
def member_role(request: HttpRequest, team: Team, pk: int) -> None:
    m = get_object_or_404(Membership, team=team, pk=pk)
    team_services.membership_change(actor=principal_of(request), membership=m, role=_form(request)["role"], source="ui")
    messages.success(request, f"{m.user.username} is now {m.role}.")


@_people_action
def member_remove(request: HttpRequest, team: Team, pk: int) -> None:
    m = get_object_or_404(Membership, team=team, pk=pk)
    team_services.membership_remove(actor=principal_of(request), membership=m, source="ui")
    messages.success(request, f"{m.user.username} removed from {team.slug}.")


@_people_action
def invitation_send(request: HttpRequest, team: Team) -> None:
    data = _form(request)
    invitation, path = team_services.invitation_create(
        actor=request.user, team=team, email=data["email"], role=data["role"], source="ui"
    )
    link = request.build_absolute_uri(path)
    messages.success(
        request,
        f"Invitation sent to {invitation.email} as {invitation.role}; it works once, until "
        f"{invitation.expires_at:%Y-%m-%d}. The link (shown only now): {link}",
    )


@_people_action
def invitation_revoke(request: HttpRequest, team: Team, pk: int) -> None:
    inv = get_object_or_404(Invitation, team=team, pk=pk)
    team_services.invitation_revoke(actor=request.user, invitation=inv, source="ui")
    messages.success(request, f"Invitation to {inv.email} withdrawn; its link no longer works.")


def _decide(request: HttpRequest, team: Team, pk: int, approve: bool) -> None:
    req = get_object_or_404(JoinRequest, team=team, pk=pk)
    team_services.join_request_decide(
        actor=principal_of(request),
        request=req,
        approve=approve,
        role=_form(request)["role"] or Role.MEMBER,
        source="ui",
    )
    messages.success(request, f"{req.user.username}: {req.state}.")


@_people_action
def join_request_approve(request: HttpRequest, team: Team, pk: int) -> None:
    _decide(request, team, pk, approve=True)


@_people_action
def join_request_reject(request: HttpRequest, team: Team, pk: int) -> None:
    _decide(request, team, pk, approve=False)


def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The link in an invitation mail: join (signed in), or sign up and join; a link that cannot be used says why."""
    try:
        inv = team_services.invitation_check(token)
    except team_services.InvitationRefused as exc:
        return render(request, "teams/invitation.html", {"refused": str(exc)}, status=410)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        try:
            if request.user.is_authenticated:
                user = request.user
            elif not settings.PASSWORD_SIGNUP:
                raise ValidationError({"username": ["Sign-up with a password is turned off: sign in first."]})
            else:
                password = request.POST.get("password", "")
                form = SignUpForm(
                    {
                        "username": request.POST.get("username", ""),
                        "email": inv.email,
                        "password1": password,
                        "password2": password,
                    }
                )
                if not form.is_valid():  # Django's username and password rules, and one account per address
                    raise ValidationError(form_errors(form, rename={"password1": "password", "password2": "password"}))
                user = create_account(form, verify=False)  # accepting the invitation proves the address
            membership = team_services.invitation_accept(token=token, user=user, source="ui")
        except team_services.InvitationRefused as exc:
            return render(request, "teams/invitation.html", {"refused": str(exc)}, status=410)
        except ValidationError as exc:
            errors = error_fields(exc)
        else:
            if not request.user.is_authenticated:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, f"Welcome to {membership.team.slug}: you are {membership.role}.")
            return redirect("dashboard:team_detail", slug=membership.team.slug)
    return render(request, "teams/invitation.html", {"inv": inv, "errors": errors}, status=400 if errors else 200)


@login_required
def join_team(request: HttpRequest) -> HttpResponse:
    """Ask to join a team by its slug; its admins approve on their members page."""
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        form = JoinRequestForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError(form_errors(form))
            req = team_services.join_request_create(
                user=request.user,
                team_slug=form.cleaned_data["team"].strip(),
                message=form.cleaned_data["message"],
                source="ui",
            )
        except ValidationError as exc:
            errors = error_fields(exc)
        else:
            messages.success(request, f"Asked to join {req.team.slug}: its admins decide; you will see it here.")
            return redirect("dashboard:join_team")
    mine = request.user.join_requests.select_related("team")[:20]
    return render(request, "teams/join.html", {"errors": errors, "mine": mine}, status=400 if errors else 200)


@login_required
@require_POST
def team_delete(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_or_404(request, slug, Role.OWNER)
    if request.POST.get("confirm") != team.slug:
        messages.error(request, f"Type the team's slug ({team.slug}) to confirm.")
        return redirect("dashboard:team_members", slug=team.slug)
    try:
        team_services.team_delete(actor=principal_of(request), team=team, source="ui")
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("dashboard:team_members", slug=slug)
    messages.success(request, f"Team {slug} deleted.")
    return redirect("dashboard:home")
