"""Getting started: the wizard, the one-click template, the terminal path."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.applications import services as app_services
from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.core.errors import error_text
from apps.quotas.models import Quota
from apps.quotas.services import fmt
from apps.teams.models import ApiToken, Role, Team
from apps.teams.principal import principal_of

from .common import team_or_404


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
    # Getting started offers it in the teams where the user may deploy; anything else is a forged form
    team = team_or_404(request, request.POST.get("team", ""), Role.MEMBER)
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
def welcome(request: HttpRequest) -> HttpResponse:
    """The first-run wizard: each step is done when the data says so, and links to where it is done."""
    principal = principal_of(request)
    teams = list(principal.teams().order_by("slug"))
    team = principal.teams(Role.ADMIN).order_by("slug").first() or (teams[0] if teams else None)
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
            "done_url": f"/teams/{team.slug}/" if team else None,  # once done, Open shows what was made
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
            "done_url": f"/apps/{app.pk}/" if app else None,
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
