"""What the pages share: the team or application a URL names, if the principal may see it (404 otherwise)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.http import Http404, HttpRequest

from apps.applications.models import Application
from apps.applications.selectors import visible_application
from apps.deploys.visibility import ClusterLens
from apps.teams.models import Role, Team
from apps.teams.principal import principal_of


def team_or_404(request: HttpRequest, slug: str, needed: str = Role.VIEWER) -> Team:
    """The team the URL names, if the principal holds ``needed`` in it; pages a role may not use are not shown to
    it at all (404)."""
    principal = principal_of(request)
    team = principal.teams().filter(slug=slug).first()
    if team is None or not principal.can(team, needed):
        raise Http404("No such team")
    return team


def visible_app_or_404(request: HttpRequest, pk: int) -> Application:
    app = visible_application(principal_of(request), pk)
    if app is None:
        raise Http404("No such application")
    return app


def show_errors(lens: ClusterLens, runs: Any) -> None:
    """Each run's error as the principal may read it (``run.shown_error``, what the template shows)."""
    for run in runs:
        run.shown_error = lens.run_error(run)


TEAM_COLOURS = ["#0d6efd", "#198754", "#d63384", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#0dcaf0"]


def team_colours(teams: set[str]) -> dict[str, str]:
    """One colour per team, the same order on every page that draws nodes (the cluster page, compaction maps)."""
    return {t: TEAM_COLOURS[i % len(TEAM_COLOURS)] for i, t in enumerate(sorted(teams))}


def gpu_fill(replicas: list[dict], capacity: Decimal, colours: dict[str, str]) -> list[dict]:
    """A node's GPU bar split by team: one segment per team that holds GPUs there, in the team's colour."""
    per_team: dict[str, Decimal] = {}
    for r in replicas:
        gpus = Decimal(str(r["resources"].get("GPU", "0") or "0"))
        per_team[r["team"]] = per_team.get(r["team"], Decimal(0)) + gpus
    return [
        {
            "team": t,
            "gpus": format(g.normalize(), "f"),
            "pct": float(g / capacity * 100) if capacity else 0,
            "colour": colours[t],
        }
        for t, g in sorted(per_team.items())
        if g
    ]
