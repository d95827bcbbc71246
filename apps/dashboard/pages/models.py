from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.applications.models import Application
from apps.catalog import services
from apps.catalog.models import ModelEntry
from apps.core.errors import error_fields
from apps.metrics.sources import residency
from apps.teams.models import Role, role_at_least
from apps.teams.principal import principal_of


class ModelEntryForm(forms.Form):
    application = forms.IntegerField(required=False, min_value=1)
    deployment = forms.CharField(required=False)
    model_id = forms.CharField(required=False)
    uri = forms.CharField(required=False)
    size_bytes = forms.IntegerField(
        required=False, min_value=0, error_messages={"invalid": "Must be a whole number of bytes."}
    )
    description = forms.CharField(required=False)


@login_required
@require_POST
def model_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove a model from the catalog (members of its application's team)."""
    principal = principal_of(request)
    entry = get_object_or_404(
        ModelEntry.objects.select_related("application__team"), pk=pk, application__deleted_at__isnull=True
    )
    if not principal.can(entry.application.team, Role.MEMBER):
        raise Http404("No such model")  # another team's, or the principal only reads this team
    services.model_delete(actor=request.user, entry=entry, source="ui")
    messages.success(request, f"Model {entry.model_id} removed; the app's user_config changes on the next push.")
    return redirect("dashboard:models")


@dataclass(frozen=True)
class AppChoice:
    pk: int
    label: str
    selected: bool


@login_required
def models_page(request: HttpRequest) -> HttpResponse:
    """The multiplexed-model catalog of the user's teams, where each model is resident now, and a form to add one.

    Reads only what it shows: the catalog's entries with their apps, the clusters those run on, and for the form
    each writable app's id and name (a platform team's 10,000 apps are not loaded whole)."""
    principal = principal_of(request)
    visible = principal.restrict(Application.objects.filter(deleted_at__isnull=True))
    team_ids = set(visible.values_list("team_id", flat=True).distinct())
    writable_teams = {t for t in team_ids if role_at_least(principal.role_id(t), Role.MEMBER)}
    errors: dict[str, list[str]] = {}
    values = {
        k: request.POST.get(k, "")
        for k in ("application", "deployment", "model_id", "uri", "size_bytes", "description")
    }
    if request.method == "POST":
        form = ModelEntryForm(request.POST)
        data = form.cleaned_data if form.is_valid() else {}
        app = (
            visible.filter(pk=data["application"], team_id__in=writable_teams)
            .select_related("team", "cluster", "current_revision")
            .first()
            if data.get("application")
            else None
        )
        try:
            if form.errors.get("size_bytes"):
                raise ValidationError({"size_bytes": list(form.errors["size_bytes"])})
            if app is None:
                raise ValidationError({"application": ["Choose an application your team may change."]})
            entry = services.model_create(
                actor=request.user,
                application=app,
                deployment=data["deployment"],
                model_id=data["model_id"].strip(),
                uri=data["uri"].strip(),
                size_bytes=data["size_bytes"],
                description=data["description"],
                source="ui",
            )
            messages.success(
                request,
                f"Model {entry.model_id} added to {app.name}/{entry.deployment}: pushed to the app's user_config, "
                "no restart needed.",
            )
            return redirect("dashboard:models")
        except ValidationError as exc:
            errors = error_fields(exc)
    entries = list(
        ModelEntry.objects.filter(application__in=visible.values("pk"))
        .select_related("application__team", "application__cluster")
        .order_by("application__team__slug", "application__name", "model_id")
    )
    where: dict[tuple[str, str], list[dict]] = {}
    for r in residency(list({e.application.cluster_id: e.application.cluster for e in entries}.values())):
        where.setdefault((r.get("application", ""), r.get("model_id", "")), []).append(r)
    rows = [
        {
            "entry": entry,
            "app": entry.application,
            "resident": where.get((entry.application.serve_name, entry.model_id), []),
            "can_edit": entry.application.team_id in writable_teams,
        }
        for entry in entries
    ]
    choices = [
        AppChoice(pk, f"{slug}/{name}", str(pk) == values["application"])
        for pk, slug, name in visible.filter(team_id__in=writable_teams)
        .order_by("team__slug", "name")
        .values_list("pk", "team__slug", "name")
    ]
    return render(
        request,
        "catalog/models.html",
        {"rows": rows, "apps": choices, "errors": errors, "values": values},
        status=400 if errors else 200,
    )
