"""Audit for Django admin edits of models that have no service of their own (teams, pools, memberships)."""

from __future__ import annotations

from typing import Any

from django.forms.models import model_to_dict

from .services import audit_record


def _plain(obj: Any) -> dict:
    return {k: str(v) for k, v in model_to_dict(obj).items() if k not in ("auth_token", "secret_hash", "password")}


def _team_of(obj: Any) -> Any:
    from apps.teams.models import Team

    return obj if isinstance(obj, Team) else getattr(obj, "team", None)


class AuditedAdminMixin:
    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        audit_record(
            actor=request.user,
            team=_team_of(obj),
            action=f"{obj._meta.model_name}.{'update' if change else 'create'}",
            obj=obj,
            after=_plain(obj),
            source="admin",
        )

    def delete_model(self, request, obj):  # type: ignore[no-untyped-def]
        audit_record(
            actor=request.user,
            team=None,
            action=f"{obj._meta.model_name}.delete",
            obj=obj,
            before=_plain(obj),
            source="admin",
        )
        super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request, queryset):  # type: ignore[no-untyped-def]
        for obj in queryset:
            audit_record(
                actor=request.user,
                team=None,
                action=f"{obj._meta.model_name}.delete",
                obj=obj,
                before=_plain(obj),
                source="admin",
            )
        super().delete_queryset(request, queryset)  # type: ignore[misc]

    def save_formset(self, request, form, formset, change):  # type: ignore[no-untyped-def]
        instances = formset.save(commit=False)
        for obj in formset.deleted_objects:
            audit_record(
                actor=request.user,
                team=_team_of(obj),
                action=f"{obj._meta.model_name}.delete",
                obj=obj,
                before=_plain(obj),
                source="admin",
            )
            obj.delete()
        for obj in instances:
            created = obj.pk is None
            obj.save()
            audit_record(
                actor=request.user,
                team=_team_of(obj),
                action=f"{obj._meta.model_name}.{'create' if created else 'update'}",
                obj=obj,
                after=_plain(obj),
                source="admin",
            )
        formset.save_m2m()
