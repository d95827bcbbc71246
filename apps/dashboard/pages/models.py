from __future__ import annotations

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


@login_required
def models_page(request: HttpRequest) -> HttpResponse:
    """The multiplexed-model catalog of the user's teams, where each model is resident now, and a form to add one."""
    principal = principal_of(request)
    apps = list(
        principal.restrict(Application.objects.filter(deleted_at__isnull=True)).select_related(
            "team", "cluster", "current_revision"
        )
    )
    writable = [a for a in apps if role_at_least(principal.role_id(a.team_id), Role.MEMBER)]
    errors: dict[str, list[str]] = {}
    values = {
        k: request.POST.get(k, "")
        for k in ("application", "deployment", "model_id", "uri", "size_bytes", "description")
    }
    if request.method == "POST":
        form = ModelEntryForm(request.POST)
        data = form.cleaned_data if form.is_valid() else {}
        app = next((a for a in writable if a.pk == data.get("application")), None)
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
    by_app = {a.pk: a for a in apps}
    where: dict[tuple[str, str], list[dict]] = {}
    for r in residency(list({a.cluster_id: a.cluster for a in apps}.values())):
        where.setdefault((r.get("application", ""), r.get("model_id", "")), []).append(r)
    rows = []
    for entry in ModelEntry.objects.filter(application__in=apps).order_by(
        "application__team__slug", "application__name", "model_id"
    ):
        app = by_app[entry.application_id]
        rows.append(
            {
                "entry": entry,
                "app": app,
                "resident": where.get((app.serve_name, entry.model_id), []),
                "can_edit": app in writable,
            }
        )
    return render(
        request,
        "catalog/models.html",
        {"rows": rows, "apps": writable, "errors": errors, "values": values},
        status=400 if errors else 200,
    )
