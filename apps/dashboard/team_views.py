"""Dashboard pages for self-service: teams, members, quota (and requests), tokens, audit log, first-run wizard."""

from __future__ import annotations

import re
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_POST
from rest_framework.exceptions import ValidationError

from apps.applications import services as app_services
from apps.applications.models import Application
from apps.audit.selectors import audit_events_for, filter_events
from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_by_id
from apps.core.fields import error_fields, error_text
from apps.core.ids import parse_id
from apps.quotas.models import Quota, QuotaRequest
from apps.quotas.selectors import quotas_by_team_pool
from apps.quotas.services import fmt, quota_request_create, quota_request_decide
from apps.sso.models import SsoIdentity
from apps.teams import cli_login
from apps.teams import services as team_services
from apps.teams.models import ApiToken, Invitation, JoinRequest, Membership, Role, Team
from apps.teams.selectors import can, role_in, teams_for

from .accounts import SignUpForm, create_account
from .forms import (
    JoinRequestForm,
    MemberForm,
    QuotaDecisionForm,
    QuotaRequestForm,
    TeamForm,
    TokenForm,
    form_errors,
)
from .selectors import quota_rows


def _team(request: HttpRequest, slug: str, needed: str = Role.VIEWER) -> Team:
    team = teams_for(request.user).filter(slug=slug).first()
    if team is None:
        raise Http404("No such team")
    if not can(request.user, team, needed):
        raise Http404("No such team")  # pages a role may not use are not shown to it at all
    return team


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


def _free_slug(name: str) -> str:
    """A slug from the display name when none was typed: ``Dana's ML team`` -> ``danas-ml-team`` (or ``-2`` ...)."""
    base = re.sub(r"[-_]+", "-", slugify(name)).strip("-")[:27].strip("-")
    if not base:
        return ""  # the service names the missing slug
    taken = set(Team.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    return next(s for s in (base, *(f"{base}-{n}" for n in range(2, 1000))) if s not in taken)


def _starter(team: Team) -> Quota | None:
    return Quota.objects.filter(team=team, starter=True).select_related("cluster", "pool").order_by("pk").first()


def _template_spec(team: Team, name: str, quota: Quota | None) -> dict[str, Any]:
    """The hello template as Getting started deploys it (one click) and prints it (servectl): its GPUs are a share of
    the team's quota (at most 0.5), in the pool's resource; none without a quota."""
    options: dict[str, Any] = {"num_cpus": 0.1}
    if quota is not None and quota.gpus > 0:
        amount = float(min(quota.gpus, Decimal("0.5")))
        if quota.pool.resource == "GPU":
            options["num_gpus"] = amount
        else:
            options["resources"] = {quota.pool.resource: amount}
    return {
        "import_path": "examples.hello:app",
        "route_prefix": f"/{team.slug}/{name}",
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": options}],
    }


@login_required
@require_POST
def deploy_template(request: HttpRequest) -> HttpResponse:
    """Getting started's one click: the hello template in the user's team, on the cluster of its starter grant (or
    the one cluster it has quota on), using the grant's GPUs so the first model runs on what the team was given."""
    team = teams_for(request.user).filter(slug=request.POST.get("team", "")).first()
    if team is None or not can(request.user, team, Role.MEMBER):
        messages.error(request, "Choose a team in which you may deploy.")
        return redirect("dashboard:welcome")
    quota = _starter(team) or Quota.objects.filter(team=team).select_related("cluster", "pool").order_by("pk").first()
    cluster = quota.cluster if quota else (Cluster.objects.order_by("name").first())
    if cluster is None:
        messages.error(request, "No cluster is registered yet: ask a platform admin.")
        return redirect("dashboard:welcome")
    taken = set(Application.objects.filter(team=team, cluster=cluster).values_list("name", flat=True))
    name = next(n for n in ("hello", *(f"hello-{i}" for i in range(2, 1000))) if n not in taken)
    spec = _template_spec(team, name, quota)
    try:
        app = app_services.application_create(
            actor=request.user, team=team, cluster=cluster, name=name, spec=spec, source="ui"
        )
    except ValidationError as exc:
        messages.error(request, f"The template was not deployed: {error_text(exc)}")
        return redirect("dashboard:welcome")
    messages.success(request, f"Application {app.name} created from the template; pushing to {cluster.name}.")
    return redirect("dashboard:app_detail", pk=app.pk)


@login_required
def members(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team(request, slug)
    is_admin = can(request.user, team, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        if not is_admin:
            raise Http404
        form = MemberForm(request.POST)
        if not form.is_valid():
            raise Http404  # only a tampered form has no valid op or membership id
        op, data = form.cleaned_data["op"], form.cleaned_data
        try:
            if op == "invite":
                invitation, path = team_services.invitation_create(
                    actor=request.user, team=team, email=data["email"].strip(), role=data["role"], source="ui"
                )
                link = request.build_absolute_uri(path)
                messages.success(
                    request,
                    f"Invitation sent to {invitation.email} as {invitation.role}; it works once, until "
                    f"{invitation.expires_at:%Y-%m-%d}. The link (shown only now): {link}",
                )
                return redirect("dashboard:team_members", slug=team.slug)
            if op == "revoke":
                inv = get_object_or_404(Invitation, team=team, pk=data["invitation"])
                team_services.invitation_revoke(actor=request.user, invitation=inv, source="ui")
                messages.success(request, f"Invitation to {inv.email} withdrawn; its link no longer works.")
                return redirect("dashboard:team_members", slug=team.slug)
            if op in ("approve", "reject"):
                req = get_object_or_404(JoinRequest, team=team, pk=data["join_request"])
                team_services.join_request_decide(
                    actor=request.user,
                    request=req,
                    approve=op == "approve",
                    role=data["role"] or Role.MEMBER,
                    source="ui",
                )
                messages.success(request, f"{req.user.username}: {req.state}.")
                return redirect("dashboard:team_members", slug=team.slug)
            if op == "add":
                m = team_services.membership_add(
                    actor=request.user,
                    team=team,
                    username=data["username"].strip(),
                    role=data["role"],
                    source="ui",
                )
                messages.success(request, f"{m.user.username} added as {m.role}.")
            else:
                m = get_object_or_404(Membership, team=team, pk=data["membership"])
                if op == "role":
                    team_services.membership_change(actor=request.user, membership=m, role=data["role"], source="ui")
                    messages.success(request, f"{m.user.username} is now {m.role}.")
                elif op == "remove":
                    team_services.membership_remove(actor=request.user, membership=m, source="ui")
                    messages.success(request, f"{m.user.username} removed from {team.slug}.")
            return redirect("dashboard:team_members", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
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
            "roles": Role.choices,
            "errors": errors,
            "role": role_in(request.user, team),
            "is_owner": can(request.user, team, Role.OWNER),
            "invitations": team.invitations.select_related("created_by", "accepted_by")[:50] if is_admin else [],
            "join_requests": team.join_requests.filter(state="pending").select_related("user") if is_admin else [],
        },
        status=400 if errors else 200,
    )


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
                user = create_account(form)
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
    team = _team(request, slug, Role.OWNER)
    if request.POST.get("confirm") != team.slug:
        messages.error(request, f"Type the team's slug ({team.slug}) to confirm.")
        return redirect("dashboard:team_members", slug=team.slug)
    try:
        team_services.team_delete(actor=request.user, team=team, source="ui")
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("dashboard:team_members", slug=slug)
    messages.success(request, f"Team {slug} deleted.")
    return redirect("dashboard:home")


@login_required
def quota(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team(request, slug)
    is_admin = can(request.user, team, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    values = {k: request.POST.get(k, "") for k in ("cluster", "pool", "gpus", "reason")}
    if request.method == "POST":
        if not is_admin:
            raise Http404
        form = QuotaRequestForm(request.POST)
        data = form.cleaned_data if form.is_valid() else {}
        cluster = cluster_by_id(data.get("cluster"))
        try:
            if cluster is None:
                raise ValidationError({"cluster": ["Choose a cluster."]})
            req = quota_request_create(
                actor=request.user,
                team=team,
                cluster=cluster,
                pool_name=data["pool"],
                gpus=data["gpus"],
                reason=data["reason"],
                source="ui",
            )
            messages.success(
                request,
                f"Asked for {fmt(req.gpus)} GPUs in {req.pool.name} on {cluster.name}; a platform admin decides.",
            )
            return redirect("dashboard:team_quota", slug=team.slug)
        except ValidationError as exc:
            errors = error_fields(exc)
    rows = quota_rows(team)
    return render(
        request,
        "teams/quota.html",
        {
            "team": team,
            "rows": rows,
            "charts": [
                f"series=team_gpus_allocated&team={team.slug}&cluster={c}"
                for c in sorted({r["cluster"].pk for r in rows})
            ],
            "is_admin": is_admin,
            "errors": errors,
            "values": values,
            "clusters": Cluster.objects.prefetch_related("pools").order_by("name"),
            "requests": team.quota_requests.select_related("pool", "cluster", "requested_by", "decided_by")[:50],
        },
        status=400 if errors else 200,
    )


@login_required
def tokens(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team(request, slug, Role.ADMIN)
    errors: dict[str, list[str]] = {}
    created_secret = None
    values = {k: request.POST.get(k, "") for k in ("name", "role", "expires")}
    if request.method == "POST" and request.POST.get("op") == "revoke":
        token = get_object_or_404(ApiToken, pk=parse_id(request.POST.get("token")) or 0, team=team)
        team_services.token_revoke(actor=request.user, token=token, source="ui")
        messages.success(request, f"Token {token.name} ({token.prefix}…) revoked; it stops working now.")
        return redirect("dashboard:team_tokens", slug=team.slug)
    if request.method == "POST":
        form = TokenForm(request.POST)
        errors = {} if form.is_valid() else form_errors(form, {"expires": "expires_at"})
        day = form.cleaned_data.get("expires") if not errors else None
        expires_at = timezone.make_aware(datetime.combine(day, time(23, 59, 59))) if day else None
        if not errors:
            try:
                token, created_secret = team_services.token_create(
                    actor=request.user,
                    name=form.cleaned_data["name"],
                    team=team,
                    role=form.cleaned_data["role"] or Role.MEMBER,
                    expires_at=expires_at,
                    source="ui",
                )
                values = {"name": "", "role": "", "expires": ""}
            except ValidationError as exc:
                errors = error_fields(exc)
    return render(
        request,
        "teams/tokens.html",
        {
            "team": team,
            "tokens": team.api_tokens.select_related("user").order_by("-created_at"),
            "errors": errors,
            "values": values,
            "secret": created_secret,
            "roles": Role.choices,
        },
        status=400 if errors else 200,
    )


@login_required
def quota_requests_review(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404
    if request.method == "POST":
        form = QuotaDecisionForm(request.POST)
        if not form.is_valid():
            raise Http404  # only a tampered form names no request or decision
        req = get_object_or_404(QuotaRequest, pk=form.cleaned_data["request"])
        approve = form.cleaned_data["decision"] == "approve"
        try:
            quota_request_decide(
                actor=request.user, request=req, approve=approve, comment=form.cleaned_data["comment"], source="ui"
            )
            messages.success(
                request,
                f"Request from {req.team.slug} {'approved: quota set to ' + fmt(req.gpus) if approve else 'rejected'}.",
            )
        except ValidationError as exc:
            messages.error(request, error_text(exc))
        return redirect("dashboard:quota_requests")
    pending = QuotaRequest.objects.filter(state=QuotaRequest.State.PENDING).select_related(
        "team", "pool", "cluster", "requested_by"
    )
    decided = QuotaRequest.objects.exclude(state=QuotaRequest.State.PENDING).select_related(
        "team", "pool", "cluster", "decided_by"
    )[:30]
    pending = list(pending)
    current = quotas_by_team_pool((req.team_id, req.pool_id) for req in pending)
    rows = []
    for req in pending:
        quota = current.get((req.team_id, req.pool_id))
        rows.append((req, fmt(quota.gpus) if quota else "none"))
    return render(request, "teams/quota_requests.html", {"pending": rows, "decided": decided})


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    qs = audit_events_for(request.user)
    params = {k: request.GET.get(k, "") for k in ("team", "action", "actor", "q", "since", "until")}
    try:
        qs = filter_events(qs, {k: v for k, v in params.items() if v})
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    page = Paginator(qs.order_by("-at", "-id"), 50).get_page(request.GET.get("page"))
    query = "&".join(f"{k}={v}" for k, v in params.items() if v)
    return render(
        request, "teams/audit.html", {"page": page, "params": params, "query": query, "is_staff": request.user.is_staff}
    )


@login_required
def welcome(request: HttpRequest) -> HttpResponse:
    """The first-run wizard: each step is done when the data says so, and links to where it is done."""
    teams = list(teams_for(request.user).order_by("slug"))
    team = next((t for t in teams if can(request.user, t, Role.ADMIN)), teams[0] if teams else None)
    has_quota = bool(team and (Quota.objects.filter(team=team).exists() or team.quota_requests.exists()))
    starter = _starter(team) if team else None
    has_token = bool(team and ApiToken.objects.filter(user=request.user, team=team).exists())
    app = Application.objects.filter(team=team).order_by("created_at").first() if team else None
    steps = [
        {
            "title": "Create a team",
            "done": team is not None,
            "text": "A team owns applications, quota and tokens; you become its owner.",
            "url": "/teams/new/?next=/welcome/",
            "action": "Create a team",
            "post": "team_create",
        },
        {
            "title": "Request GPU quota",
            "done": has_quota,
            "text": (
                f"Your team got a starter grant of {fmt(starter.gpus)} GPU in "
                f"{starter.cluster.name}/{starter.pool.name}"
                + (f", until {starter.expires_at:%Y-%m-%d}" if starter.expires_at else "")
                + ": deploy now; ask the platform admins for more when you need it."
                if starter
                else "Ask the platform admins for GPUs in a pool; they approve or reject with a comment."
            ),
            "url": f"/teams/{team.slug}/quota/" if team else None,
            "action": "Request quota",
        },
        {
            "title": "Create an API token",
            "done": has_token,
            "optional": True,
            "text": "Optional, for CI or scripts: a token scoped to your team and a role. Shown once.",
            "url": f"/teams/{team.slug}/tokens/" if team else None,
            "action": "Create a token",
        },
        {
            "title": "Deploy a template application",
            "done": app is not None,
            "text": "Start from examples.hello:app; edit it later, every change is a revision.",
            "url": f"/apps/new/?team={team.slug}&template=hello" if team else None,
            "action": "Deploy the template",
            "post": "deploy_template",
        },
        {
            "title": "See it running",
            "done": bool(app and app.state == Application.State.RUNNING),
            "text": "The app page follows the push until Ray reports RUNNING.",
            "url": f"/apps/{app.pk}/" if app else None,
            "action": "Open the app",
        },
    ]
    current = next((i for i, s in enumerate(steps) if not s["done"] and not s.get("optional")), None)
    terminal = _terminal(request, team, starter) if team else None
    return render(
        request, "teams/welcome.html", {"steps": steps, "current": current, "team": team, "terminal": terminal}
    )


def _terminal(request: HttpRequest, team: Any, starter: Any) -> dict[str, str]:
    """The same path from a terminal with servectl, filled in with this user, team and a cluster they can use."""
    cluster = (
        starter.cluster
        if starter
        else (
            Cluster.objects.filter(quotas__team=team).order_by("name").first()
            or Cluster.objects.order_by("name").first()
        )
    )
    url = request.build_absolute_uri("/").rstrip("/")
    cluster_name = cluster.name if cluster else "<cluster>"
    application = {"name": "hello", **_template_spec(team, "hello", starter)}
    serve_file = yaml.safe_dump({"applications": [application]}, sort_keys=False)
    return {
        "login": (
            f"servectl login --url {url} --username {request.user.get_username()}"
            if request.user.has_usable_password()
            else f"servectl login --url {url} --browser"  # single sign-on: allowed in this browser
        ),
        "file": serve_file,
        "apply": f"servectl apply -f serve.yaml --team {team.slug} --cluster {cluster_name}",
        "status": f"servectl status {team.slug}/hello",
    }


@login_required
def my_tokens(request: HttpRequest) -> HttpResponse:
    """The user's own tokens (the ones POST /api/v1/auth/token/ mints, and personal ones), to see and revoke."""
    if request.method == "POST" and request.POST.get("op") == "revoke":
        pk = parse_id(request.POST.get("token")) or 0
        token = get_object_or_404(ApiToken, pk=pk, user=request.user, team__isnull=True)
        team_services.token_revoke(actor=request.user, token=token, source="ui")
        messages.success(request, f"Token {token.name} ({token.prefix}…) revoked; it stops working now.")
        return redirect("dashboard:my_tokens")
    tokens = ApiToken.objects.filter(user=request.user, team__isnull=True).order_by("-created_at")
    page = Paginator(tokens, 50).get_page(request.GET.get("page"))
    return render(request, "teams/my_tokens.html", {"tokens": page, "ttl_days": settings.API_LOGIN_TOKEN_TTL_DAYS})


@login_required
def cli_login_page(request: HttpRequest, request_id: str) -> HttpResponse:
    """``servectl login --browser`` sends people here: compare the code, then allow or deny."""
    try:
        entry = cli_login.pending(request_id)
        if request.method == "POST":
            allow = request.POST.get("decision") == "allow"
            cli_login.decide(request_id=request_id, user=request.user, allow=allow)
            return render(request, "teams/cli_login.html", {"done": "allowed" if allow else "denied"})
    except cli_login.CliLoginGone as exc:
        return render(request, "teams/cli_login.html", {"gone": str(exc)}, status=410)
    if entry["state"] != "pending":
        return render(request, "teams/cli_login.html", {"gone": f"This sign-in was already {entry['state']}."}, 410)
    return render(request, "teams/cli_login.html", {"code": entry["code"]})
