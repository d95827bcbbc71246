"""The home page: the user's teams and the clusters."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.teams.principal import principal_of


def favicon(request: HttpRequest) -> HttpResponse:
    """What browsers ask for on pages that name no icon (a JSON answer, an error page): the same icon. The static
    file's address is looked up per request (the manifest of collected files exists only after collectstatic)."""
    from django.http import HttpResponsePermanentRedirect
    from django.templatetags.static import static

    return HttpResponsePermanentRedirect(static("favicon.svg"))


@login_required
def home(request: HttpRequest) -> HttpResponse:
    principal = principal_of(request)
    teams = list(principal.teams().order_by("slug"))
    apps = Application.objects.filter(team__in=teams)
    # The role each team gave the user; staff see every team, and one they never joined says so (not "owner").
    roles = {t.pk: principal.member_role(t.pk) for t in teams}
    counts = {t.pk: 0 for t in teams}
    for team_id in apps.values_list("team_id", flat=True):
        counts[team_id] = counts.get(team_id, 0) + 1
    return render(
        request,
        "dashboard/home.html",
        {
            "teams": [(t, counts.get(t.pk, 0), roles[t.pk]) for t in teams],
            "clusters": Cluster.objects.order_by("name"),
        },
    )
