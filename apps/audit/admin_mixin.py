"""Audit for Django admin edits of models that have no service of their own (teams, pools, memberships)."""

from __future__ import annotations

from typing import Any

from django.forms.models import model_to_dict

from .services import audit_record


def _plain(obj: Any) -> dict:
    """The object's fields as text; secret ones are redacted (by audit_record, the one place that does it)."""
    return {k: str(v) for k, v in model_to_dict(obj).items()}


def _team_of(obj: Any) -> Any:
    return obj if obj._meta.label == "teams.Team" else getattr(obj, "team", None)


def _audit(request: Any, obj: Any, verb: str) -> None:
    """One admin change: after-values for create/update, before-values for delete."""
    state = {"before": _plain(obj)} if verb == "delete" else {"after": _plain(obj)}
    team = None if verb == "delete" and _team_of(obj) is obj else _team_of(obj)
    audit_record(
        actor=request.user, team=team, action=f"{obj._meta.model_name}.{verb}", obj=obj, source="admin", **state
    )


class AuditedAdminMixin:
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _audit(request, obj, "update" if change else "create")

    def delete_model(self, request, obj):
        _audit(request, obj, "delete")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            _audit(request, obj, "delete")
        super().delete_queryset(request, queryset)

    def save_formset(self, request, form, formset, change):
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            _audit(request, obj, "delete")
            obj.delete()
        for obj in instances:
            created = obj.pk is None
            obj.save()
            _audit(request, obj, "create" if created else "update")
        formset.save_m2m()
